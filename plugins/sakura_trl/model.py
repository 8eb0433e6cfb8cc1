"""Loading what is trained: the tokenizer (with its chat template), the model (QLoRA in 4 bit), the LoRA config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sakura_core.errors import StageError
from sakura_models.loading import from_pretrained


def load_tokenizer(model_path: Path, chat_template: str | None, name: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = from_pretrained(AutoTokenizer, model_path, name)
    if chat_template:
        tokenizer.chat_template = chat_template
    if not tokenizer.chat_template:
        raise StageError(
            f"model {model_path.name} has no chat template: set chat_template in the train stage "
            "(SOLAR's is in the docs)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_path: Path, options: Any, args: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    init = dict(args.model_init_kwargs or {}) if isinstance(args.model_init_kwargs, dict) else {}
    init.setdefault("dtype", "auto")
    if options.lora is not None and options.lora.quantize == "4bit":
        if not torch.cuda.is_available():
            raise StageError("lora.quantize = \"4bit\" (QLoRA) needs a CUDA GPU; remove it to train LoRA in full precision")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise StageError("lora.quantize = \"4bit\" needs the bitsandbytes package (pip install bitsandbytes)") from None
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if args.bf16 else torch.float16
        init["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
        )
        init["dtype"] = compute
    model = from_pretrained(AutoModelForCausalLM, model_path, options.model, **init)
    if not torch.cuda.is_available() and model.dtype == torch.float16:
        model = model.float()  # fp16 kernels on CPU are slow or missing
    if options.lora is not None and options.lora.quantize == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(args.activation_checkpointing))
    return model


def lora_config(options: Any) -> Any:
    if options.lora is None:
        return None
    from peft import LoraConfig

    lora = options.lora
    return LoraConfig(
        task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, bias=lora.bias,
    )

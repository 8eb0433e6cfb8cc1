"""Options of ``kind = "train"`` stages (cheap to import: pydantic only)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sakura_core.stage import Options


class LoraOptions(Options):
    """The ``lora`` table: a peft ``LoraConfig``; with LoRA the DPO reference is the policy with the adapter off."""

    r: int = Field(16, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    bias: Literal["none", "all", "lora_only"] = "none"
    # QLoRA: load the base weights in 4 bit (bitsandbytes, CUDA only).
    quantize: Literal["4bit"] | None = None


class LauncherOptions(Options):
    """The ``launcher`` table: run the stage under ``accelerate launch``."""

    num_processes: int = Field(1, ge=1)
    # An accelerate config file (DDP, DeepSpeed ZeRO, FSDP), relative to the recipe.
    config_file: str | None = None
    main_process_port: int | None = Field(None, ge=1, le=65535)


class TrainOptions(Options):
    trainer: str = "dpo"
    model: str
    dataset: str
    lora: LoraOptions | None = None
    # trl's own config fields (DPOConfig / SFTConfig), checked against a snapshot of trl's config class.
    args: dict[str, Any] = Field(default_factory=dict)
    # A Jinja chat template; default: the model tokenizer's own.
    chat_template: str | None = None
    # DPO: cache the reference log-probs in the store, keyed by reference model, data and tokenization.
    ref_cache: bool = True
    train_split: str = "train"
    eval_split: str | None = None
    launcher: LauncherOptions | None = None

"""The train stage's artifact: the whole model (LoRA merged) with its tokenizer, and the adapter beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_artifact(trainer: Any, tokenizer: Any, output_dir: Path, lora: bool, dtype: str | None) -> None:
    """A complete model (LoRA merged) in safetensors shards with tokenizer + chat template; adapter beside it.

    The model is saved in ``dtype`` (the input model's unless the recipe says otherwise): a float16 model
    trained in float32 on a CPU comes out float16, the size it went in.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if lora:
        model.save_pretrained(output_dir / "adapter", safe_serialization=True)
        tokenizer.save_pretrained(output_dir / "adapter")
        model = model.merge_and_unload()
    if dtype and not getattr(model, "is_quantized", False):  # a 4-bit base keeps its quantization config
        import torch

        model = model.to(getattr(torch, dtype))
    if hasattr(model.config, "use_cache"):
        # transformers' Trainer sets it to args.use_cache (False) for training; the saved model is for generation
        model.config.use_cache = True
    model.save_pretrained(output_dir, safe_serialization=True, max_shard_size="2GB")
    tokenizer.save_pretrained(output_dir)
    for junk in ("README.md", "training_args.bin"):
        path = output_dir / junk
        if path.exists():
            path.unlink()


"""CUDA out-of-memory as one line that says which settings to change."""

from __future__ import annotations

from typing import Any

from sakura_core.errors import StageError
from sakura_trl.config import TRL_BATCH_SIZE, TRL_MAX_LENGTH


class oom_guard:
    """Turns CUDA out-of-memory into one line that says which settings to change, with the values the run
    used (``values``: the configuration ``config.resolve_args`` resolved)."""

    def __init__(self, options: Any, values: dict[str, Any]):
        self.options = options
        self.values = values

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc is None:
            return False
        import torch

        if isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc)):
            args = self.values
            batch = args.get("per_device_train_batch_size", TRL_BATCH_SIZE)
            hints = [f"lower args.per_device_train_batch_size (now {batch}) and raise gradient_accumulation_steps"]
            if not args.get("activation_checkpointing"):
                hints.append("set args.activation_checkpointing = true")
            if self.options.lora is None:
                hints.append("train a LoRA adapter (lora = { r = 16 })")
            elif self.options.lora.quantize is None:
                hints.append('load the base in 4 bit (lora.quantize = "4bit")')
            hints.append(f"lower args.max_length (now {args.get('max_length', TRL_MAX_LENGTH)})")
            raise StageError("out of GPU memory: " + "; ".join(hints)) from None
        return False

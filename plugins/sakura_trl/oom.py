"""CUDA out-of-memory as one line that says which settings to change."""

from __future__ import annotations

from typing import Any

from sakura_core.errors import StageError


class oom_guard:
    """Turns CUDA out-of-memory into one line that says which settings to change."""

    def __init__(self, options: Any):
        self.options = options

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc is None:
            return False
        import torch

        if isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc)):
            args = self.options.args
            hints = [f"lower args.per_device_train_batch_size (now {args.get('per_device_train_batch_size', 8)}) "
                     "and raise gradient_accumulation_steps"]
            if not (args.get("activation_checkpointing") or args.get("gradient_checkpointing")):
                hints.append("set args.activation_checkpointing = true")
            if self.options.lora is None:
                hints.append("train a LoRA adapter (lora = { r = 16 })")
            elif self.options.lora.quantize is None:
                hints.append('load the base in 4 bit (lora.quantize = "4bit")')
            hints.append(f"lower args.max_length (now {args.get('max_length', 1024)})")
            raise StageError("out of GPU memory: " + "; ".join(hints)) from None
        return False

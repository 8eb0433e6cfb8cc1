"""The trainer's configuration: the trl config object built from sakura's defaults and the recipe's ``args``.

Imported only when a train stage runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sakura_core.errors import StageError


def build_config(trainer_def: Any, options: Any, output_dir: Path, has_eval: bool, data_max_length: int | None = None) -> Any:
    import torch

    config_cls = resolve(trainer_def.config_class)
    values = dict(trainer_def.defaults)
    # bf16 mixed precision where the hardware runs it natively; trl's default turns it on for CPU too.
    cuda = torch.cuda.is_available()
    values["bf16"] = bool(cuda and torch.cuda.is_bf16_supported())
    values["dataloader_pin_memory"] = cuda
    if cuda and _has_liger():
        values["use_liger_kernel"] = True  # liger's layer kernels: same math, less memory, faster
    if not cuda:
        values["use_cpu"] = True  # also makes accelerate run DDP on CPU (gloo) under a launcher
    if trainer_def.preference:
        # The reference pass runs without gradients: twice the training batch fits in less memory than a step.
        values["precompute_ref_batch_size"] = 2 * options.args.get("per_device_train_batch_size", 8)
    if data_max_length:
        # The rows were filtered to this many tokens: the trainer must not cut them shorter (trl's default is
        # 1024, and the Sakura-SOLAR scripts silently trained on 512). args.max_length still wins.
        values["max_length"] = data_max_length
    values.update(options.args)
    # transformers 5 renamed gradient_checkpointing*; a recipe may use either name.
    for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                     ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
        if old in options.args and new not in options.args:
            values[new] = values.pop(old)
    if "optim" in values:
        values["optim"] = portable_optimizer(values["optim"], cuda)
    values["output_dir"] = str(output_dir)
    if not has_eval:
        values.setdefault("eval_strategy", "no")
    elif "eval_strategy" not in options.args:
        values["eval_strategy"] = "epoch"  # an eval_split is named to be evaluated (trl's default never does)
    try:
        return config_cls(**values)
    except (ValueError, TypeError) as exc:
        raise StageError(f"invalid trainer args: {str(exc).splitlines()[0]}") from None


# bitsandbytes' paged optimizers keep the same 32-bit AdamW state as torch's, only paged out to CPU memory
# under GPU pressure; without CUDA (or without bitsandbytes) the torch optimizer performs the same update, so a
# recipe written for a GPU (Sakura-SOLAR's paged_adamw_32bit) still runs as written on a CPU machine.
UNPAGED = {"paged_adamw_32bit": "adamw_torch", "paged_adamw": "adamw_torch"}


def portable_optimizer(optim: Any, cuda: bool) -> Any:
    """``optim`` as given, or its unpaged equivalent when bitsandbytes cannot run it here."""
    if optim not in UNPAGED:
        return optim
    import importlib.util

    if cuda and importlib.util.find_spec("bitsandbytes") is not None:
        return optim
    return UNPAGED[optim]


def _has_liger() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def resolve(name: str) -> Any:
    """``"DPOTrainer"`` (an attribute of trl) or ``"package.module:Class"`` (a third-party trainer)."""
    import importlib

    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    import trl

    return getattr(trl, name)


def check_max_lengths(trainer: Any, options: Any) -> None:
    """The max lengths a recipe sets must be the ones the trainer uses (the Sakura scripts lost them)."""
    for key in ("max_length", "max_prompt_length", "max_completion_length"):
        if key in options.args and getattr(trainer.args, key, None) != options.args[key]:
            raise StageError(f"args.{key} = {options.args[key]} did not reach the trainer")

"""The trainer's configuration: what the trl config class receives, resolved in one place.

``resolve_args`` computes the values from the trainer's defaults, the device, the dataset and the recipe's
``args``; ``build_config`` passes them to trl, ``TrainStage.estimate`` sizes a GPU run from them, the artifact
records them (``trainer_config.json``) and the model card shows them. No torch or trl import at module level:
``sakura plan`` resolves the configuration too.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sakura_core.errors import StageError

if TYPE_CHECKING:  # pragma: no cover
    from sakura_trl.contract import Trainer
    from sakura_trl.options import TrainOptions

# transformers 5 renamed gradient_checkpointing*; a recipe may use either name.
RENAMED = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}
# trl's own defaults, for what is not in the resolved values
TRL_BATCH_SIZE = 8  # per_device_train_batch_size
TRL_MAX_LENGTH = 1024  # max_length


def resolve_args(trainer: Trainer, options: TrainOptions, *, cuda: bool, bf16: bool | None = None,
                 data_max_length: int | None = None, has_eval: bool = False) -> dict[str, Any]:
    """The values the trainer's config class receives, all but ``output_dir`` (the stage's work area).

    ``cuda``: the run has a CUDA GPU; ``bf16``: it runs bf16 natively (default: ``cuda``).
    ``data_max_length``: the token limit the dataset stage filtered its rows with; ``has_eval``: an eval split.
    """
    values = dict(trainer.defaults)
    # bf16 mixed precision where the hardware runs it natively; trl's default turns it on for CPU too.
    values["bf16"] = cuda if bf16 is None else bf16
    values["dataloader_pin_memory"] = cuda
    if cuda and _installed("liger_kernel"):
        values["use_liger_kernel"] = True  # liger's layer kernels: same math, less memory, faster
    if not cuda:
        values["use_cpu"] = True  # also makes accelerate run DDP on CPU (gloo) under a launcher
    if trainer.preference:
        # The reference pass runs without gradients: twice the training batch fits in less memory than a step.
        batch = options.args.get("per_device_train_batch_size",
                                 trainer.defaults.get("per_device_train_batch_size", TRL_BATCH_SIZE))
        values["precompute_ref_batch_size"] = 2 * batch
    if data_max_length:
        # The rows were filtered to this many tokens: the trainer must not cut them shorter (trl's default is
        # 1024, and the Sakura-SOLAR scripts silently trained on 512). args.max_length still wins.
        values["max_length"] = data_max_length
    values.update(recipe_args(options))
    if caches_reference(trainer, options):
        values["precompute_ref_log_probs"] = True  # a pass of its own before training, kept by refcache
    if "optim" in values:
        values["optim"] = portable_optimizer(values["optim"], cuda)
    if not has_eval:
        values.setdefault("eval_strategy", "no")
    elif "eval_strategy" not in options.args:
        values["eval_strategy"] = "epoch"  # an eval_split is named to be evaluated (trl's default never does)
    return values


def caches_reference(trainer: Trainer, options: TrainOptions) -> bool:
    """Whether the run keeps its reference log-probs in the store (``refcache``): a preference trainer with
    ``ref_cache`` on, unless the recipe turns precomputing off or syncs the reference (it changes in training)."""
    args = options.args
    return bool(trainer.preference and options.ref_cache and args.get("precompute_ref_log_probs", True)
                and not args.get("sync_ref_model"))


def recipe_args(options: TrainOptions) -> dict[str, Any]:
    """The recipe's ``args`` under the names the config class takes them by (see ``RENAMED``)."""
    renamed = {old: new for old, new in RENAMED.items() if old in options.args and new not in options.args}
    return {renamed.get(key, key): value for key, value in options.args.items()}


def build_config(trainer: Trainer, values: dict[str, Any], output_dir: Path) -> Any:
    """The trainer's config object from ``resolve_args``' values, its checkpoints in ``output_dir``."""
    config_cls = resolve(trainer.config_class)
    try:
        return config_cls(**values, output_dir=str(output_dir))
    except (ValueError, TypeError) as exc:
        raise StageError(f"invalid trainer args: {str(exc).splitlines()[0]}") from None


def trainer_config(values: dict[str, Any], config: Any) -> dict[str, Any]:
    """What the artifact records of the configuration: each resolved value JSON can hold (a third-party
    trainer's defaults may hold objects), and the optimizer that really ran (trl picks one when none is set)."""
    record = {key: value for key, value in values.items() if _jsonable(value)}
    optim = getattr(config, "optim", None)
    if optim is not None:
        record["optim"] = getattr(optim, "value", optim)  # transformers' OptimizerNames enum
    return dict(sorted(record.items()))


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# bitsandbytes' paged optimizers keep the same 32-bit AdamW state as torch's, only paged out to CPU memory
# under GPU pressure; without CUDA (or without bitsandbytes) the torch optimizer performs the same update, so a
# recipe written for a GPU (Sakura-SOLAR's paged_adamw_32bit) still runs as written on a CPU machine.
UNPAGED = {"paged_adamw_32bit": "adamw_torch", "paged_adamw": "adamw_torch"}


def portable_optimizer(optim: Any, cuda: bool) -> Any:
    """``optim`` as given, or its unpaged equivalent when bitsandbytes cannot run it here."""
    if optim not in UNPAGED or (cuda and _installed("bitsandbytes")):
        return optim
    return UNPAGED[optim]


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it."""
    return importlib.util.find_spec(module) is not None


def resolve(name: str) -> Any:
    """``"DPOTrainer"`` (an attribute of trl) or ``"package.module:Class"`` (a third-party trainer)."""
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

"""The trainer contract: what a ``train`` stage's ``trainer = "..."`` names, and what it must do.

A trainer is a ``Trainer``: the trl config class its ``args`` are checked against (through a snapshot of the
config's fields, so ``sakura validate`` imports no trl), the trainer class, the dataset columns every row
needs, sakura's defaults under the recipe's ``args``, and ``run(job)``, which builds the trainer from the
``TrainJob`` the stage prepared and trains it. The stage owns everything else: loading the model and
tokenizer, LoRA, the reference log-prob cache, resuming from checkpoints, progress, metrics and saving.
A new trainer is usually a subclass that changes class attributes only::

    class IPO(DPO):
        \"\"\"DPO with the IPO loss.\"\"\"
        defaults = {**DPO.defaults, "loss_type": ["ipo"], "beta": 0.05}

This module imports no trl or torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sakura_core.errors import OptionError, did_you_mean
from sakura_core.registry import Implementation

if TYPE_CHECKING:  # pragma: no cover
    from sakura_core.stage import CheckEnv

# Keys sakura sets itself: a recipe setting them would break the stage's contract with the store.
RESERVED_ARGS = {
    "output_dir": "set by sakura: checkpoints live in the stage's work area",
    "resume_from_checkpoint": "set by sakura: a re-run resumes from the stage's last checkpoint",
    "overwrite_output_dir": "set by sakura",
}

_KIND_CHECKS: dict[str, Callable[[Any], bool]] = {
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
    "any": lambda v: True,
}

_WORDS = {"bool": "a boolean", "int": "an integer", "float": "a number", "str": "a string", "list": "a list",
          "dict": "a table", "null": "null"}


@dataclass
class TrainJob:
    """What ``Trainer.run`` gets: everything needed to build the trl trainer and train it."""

    trainer_class: type
    """The trainer class (``Trainer.trainer_class`` resolved) with sakura's additions: the reference
    log-prob cache, LoRA on ``lm_head``, one clear line for rows that tokenizing drops."""
    kwargs: dict[str, Any]
    """Its constructor's arguments: ``model``, ``args`` (the config object), ``train_dataset``,
    ``eval_dataset``, ``processing_class`` (the tokenizer), ``peft_config``, ``callbacks`` (and ``ref_model``
    for preference trainers)."""
    resume_from: str | None = None
    """The checkpoint to resume from (a killed run's last complete one), or None."""
    prepare: Callable[[Any], None] = field(default=lambda trainer: None, repr=False)
    """Called on the built trainer before training: drops transformers' printing callbacks and checks the
    recipe's length settings reached it."""


class Trainer(Implementation):
    """A trainer kind (``dpo``, ``sft``, ...). Its options are the train stage's ``args``."""

    config_class: ClassVar[str]
    """The config class ``args`` are fields of: an attribute of trl (``"DPOConfig"``) or ``"package.module:Class"``."""
    trainer_class: ClassVar[str]
    """The trainer class run: an attribute of trl (``"DPOTrainer"``) or ``"package.module:Class"``."""
    columns: ClassVar[tuple[str, ...]] = ()
    """Columns every training row must have (the dataset is checked before the model loads)."""
    defaults: ClassVar[dict[str, Any]] = {}
    """sakura's values for config fields, under the recipe's ``args`` (which win)."""
    preference: ClassVar[bool] = False
    """Uses a reference model (DPO-like): the stage's reference log-prob cache applies."""
    fields: ClassVar[dict[str, list[str]] | None] = None
    """Field name -> accepted value kinds (``bool``, ``int``, ``float``, ``str``, ``list``, ``dict``, ``null``,
    ``any``), to check ``args`` without importing trl; None: read ``config_class`` from sakura's snapshot of
    trl (a trainer on another config class gives its own)."""

    def config_fields(self) -> dict[str, list[str]]:
        if self.fields is not None:
            return self.fields
        from sakura_trl.snapshot import load_snapshot

        return load_snapshot()["configs"][self.config_class]

    def check(self, options: dict[str, Any], env: CheckEnv | None = None, key: str = "args") -> None:
        """Reject unknown ``args`` (with a suggestion), values of the wrong kind, and impossible values."""
        fields = self.config_fields()
        for name, value in options.items():
            path = f"{key}.{name}"
            if name in RESERVED_ARGS:
                raise OptionError(path, RESERVED_ARGS[name])
            if name not in fields:
                raise OptionError(path, f"unknown option for trl's {self.config_class}{did_you_mean(name, fields)}")
            kinds = fields[name]
            if not any(_KIND_CHECKS[k](value) for k in kinds):
                shown = [k for k in kinds if not (k == "int" and "float" in kinds)]
                wanted = " or ".join(_WORDS.get(k, k) for k in shown)
                raise OptionError(path, f"must be {wanted} (got {value!r})")
        for name, value in options.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise OptionError(f"{key}.{name}", f"must be a finite number (got {value!r})")
        lr = options.get("learning_rate")
        if lr is not None and lr <= 0:
            raise OptionError(f"{key}.learning_rate", f"must be positive (got {lr!r})")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length"):
            value = options.get(name)
            if isinstance(value, int) and value <= 0:
                raise OptionError(f"{key}.{name}", f"must be positive (got {value!r})")
        if "beta" in options and self.preference and options["beta"] <= 0:
            raise OptionError(f"{key}.beta", f"must be positive (got {options['beta']!r})")

    def run(self, job: TrainJob) -> Any:
        """Build the trainer from ``job`` and train it; return the trained trainer (the stage saves its model)."""
        trainer = job.trainer_class(**job.kwargs)
        job.prepare(trainer)
        trainer.train(resume_from_checkpoint=job.resume_from)
        return trainer

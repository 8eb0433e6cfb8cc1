"""Trainer plugins (``trainer = "dpo"`` / ``"sft"``): what a train stage needs to know about each.

A trainer names its trl config class (validated through a snapshot, so checking a recipe imports no
trl), the dataset columns it needs, sakura's defaults for it, and how to build the trl trainer.
Third-party plugins register their own ``Trainer`` through ``sakura_register_trainers``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sakura_core.errors import OptionError, did_you_mean

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
class Trainer:
    """One trainer kind. ``build`` is imported lazily: ``"module:function"``."""

    name: str
    config_class: str  # attribute of trl (and key of trl_config_fields.json), or "package.module:Class"
    trainer_class: str  # attribute of trl, or "package.module:Class"
    columns: tuple[str, ...]  # columns every training row must have
    defaults: dict[str, Any] = field(default_factory=dict)  # sakura's defaults, under the recipe's args
    preference: bool = False  # uses a reference model (DPO-like): reference cache applies
    version: str = "1"
    # Field name -> accepted value kinds ("bool", "int", "float", "str", "list", "dict", "null", "any").
    # None: read trl's config class from sakura's snapshot (a third-party trainer passes its own).
    fields: dict[str, list[str]] | None = None

    def config_fields(self) -> dict[str, list[str]]:
        if self.fields is not None:
            return self.fields
        from sakura_trl.snapshot import load_snapshot

        return load_snapshot()["configs"][self.config_class]

    def check_args(self, args: dict[str, Any], key: str = "args") -> None:
        """Reject unknown keys (with a suggestion), values of the wrong kind, and impossible values."""
        fields = self.config_fields()
        for name, value in args.items():
            path = f"{key}.{name}"
            if name in RESERVED_ARGS:
                raise OptionError(path, RESERVED_ARGS[name])
            if name not in fields:
                raise OptionError(
                    path, f"unknown option for trl's {self.config_class}{did_you_mean(name, fields)}"
                )
            kinds = fields[name]
            if not any(_KIND_CHECKS[k](value) for k in kinds):
                shown = [k for k in kinds if not (k == "int" and "float" in kinds)]
                wanted = " or ".join(_WORDS.get(k, k) for k in shown)
                raise OptionError(path, f"must be {wanted} (got {value!r})")
        lr = args.get("learning_rate")
        if lr is not None and lr <= 0:
            raise OptionError(f"{key}.learning_rate", f"must be positive (got {lr!r})")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length"):
            value = args.get(name)
            if isinstance(value, int) and value <= 0:
                raise OptionError(f"{key}.{name}", f"must be positive (got {value!r})")
        if "beta" in args and self.preference and args["beta"] <= 0:
            raise OptionError(f"{key}.beta", f"must be positive (got {args['beta']!r})")


# Speed defaults that do not change what is optimized (the recipe's args win over them):
# - activation (gradient) checkpointing off: trl turns it on by default; it trades ~20-30% speed for memory.
#   With LoRA or small models the activations fit; OOM messages tell the user to turn it back on.
# - logging every step so live metrics and the manifest see every step.
COMMON_DEFAULTS: dict[str, Any] = {
    "activation_checkpointing": False,
    "logging_steps": 1,
    "report_to": "none",
    "save_strategy": "steps",
    "save_steps": 50,
    "save_total_limit": 2,
    "disable_tqdm": True,
}

DPO = Trainer(
    name="dpo",
    config_class="DPOConfig",
    trainer_class="DPOTrainer",
    columns=("prompt", "chosen", "rejected"),
    defaults={**COMMON_DEFAULTS},
    preference=True,
)

SFT = Trainer(
    name="sft",
    config_class="SFTConfig",
    trainer_class="SFTTrainer",
    columns=("messages",),
    defaults={**COMMON_DEFAULTS},
)

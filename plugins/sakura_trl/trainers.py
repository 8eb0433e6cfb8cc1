"""The built-in trainers, ``dpo`` and ``sft`` (trl). The contract they follow is ``sakura_trl.contract``."""

from __future__ import annotations

from typing import Any

from sakura_trl.contract import Trainer

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


class DPO(Trainer):
    """Direct preference optimization (trl's DPOTrainer) on prompt / chosen / rejected rows."""

    config_class = "DPOConfig"
    trainer_class = "DPOTrainer"
    columns = ("prompt", "chosen", "rejected")
    defaults = {**COMMON_DEFAULTS}
    preference = True


class SFT(Trainer):
    """Supervised fine-tuning (trl's SFTTrainer) on chat ``messages`` rows."""

    config_class = "SFTConfig"
    trainer_class = "SFTTrainer"
    columns = ("messages",)
    defaults = {**COMMON_DEFAULTS}

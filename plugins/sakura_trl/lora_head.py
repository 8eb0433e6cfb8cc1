"""LoRA on the LM head under trl's fused log-prob head.

trl 1.x computes log-probabilities with a fused, chunked kernel that multiplies the hidden states by
``lm_head.weight`` directly, so a LoRA adapter on ``lm_head`` would never be trained, and trl refuses one.
Sakura-SOLAR's recipes put LoRA on ``lm_head`` (the 2023 trainer computed full logits). Rather than drop a
hyperparameter of the published models, the adapted head exposes its *effective* weight, W + B·A·scale, as
``weight``: the fused kernel then sees the adapter, and gradients reach A and B through that sum. With the
adapter disabled (the DPO reference) or merged, ``weight`` is the base weight, as before.

One difference from peft's own forward: LoRA dropout is not applied on the head's adapter path (the kernel
gets a weight, not an input to drop out), so the head's adapter trains without dropout.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator


class _NoLayer:
    """Nothing is an instance of it: stands in for peft's BaseTunerLayer in trl's refusal check."""


@contextmanager
def lora_head_allowed(trainer_cls: type) -> Iterator[None]:
    """Lift trl's check against a LoRA'd ``lm_head`` while the trainer is built (see the module doc)."""
    module = sys.modules[trainer_cls.__module__]
    original = getattr(module, "BaseTunerLayer", None)
    if original is None:  # a trl without the check
        yield
        return
    module.BaseTunerLayer = _NoLayer
    try:
        yield
    finally:
        module.BaseTunerLayer = original


def route_head_through_adapter(model: Any) -> bool:
    """Make a LoRA'd output head expose its effective weight; False when the head has no adapter."""
    from peft.tuners.lora import LoraLayer

    head = model.get_output_embeddings()
    if not isinstance(head, LoraLayer):
        return False
    if not getattr(head, "_sakura_effective_weight", False):
        head.__class__ = type(
            f"Effective{type(head).__name__}", (type(head),),
            {"weight": property(_effective_weight), "_sakura_effective_weight": True},
        )
    return True


def _effective_weight(self: Any) -> Any:
    weight = self.get_base_layer().weight
    if self.disable_adapters or self.merged:
        return weight
    for name in self.active_adapters:
        if name in self.lora_A:
            weight = weight + self.get_delta_weight(name)
    return weight

"""LoRA on lm_head trains under trl's fused log-prob head (plugins/sakura_trl/lora_head.py)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM


@pytest.fixture
def adapted(tiny_model):
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    add_fused_lm_head(model)  # as trl does, before peft wraps the model
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "lm_head"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # a trained adapter: B is no longer zero
    return model


def fused_and_full(model):
    ids = torch.randint(5, 200, (2, 12), generator=torch.Generator().manual_seed(1))
    fused = model(input_ids=ids, labels=ids, fused_lm_head=True).log_probs
    logits = model(input_ids=ids).logits[:, :-1]
    full = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    return fused, full


def test_the_fused_head_sees_the_adapter_and_gradients_reach_it(adapted):
    from sakura_trl.lora_head import route_head_through_adapter

    fused, full = fused_and_full(adapted)
    assert not torch.allclose(fused, full, atol=1e-4)  # trl's kernel alone ignores the head's adapter

    assert route_head_through_adapter(adapted)
    fused, full = fused_and_full(adapted)
    torch.testing.assert_close(fused, full, atol=1e-4, rtol=1e-4)

    fused.sum().backward()
    head = adapted.get_output_embeddings()
    assert head.lora_A["default"].weight.grad.abs().sum() > 0 and head.lora_B["default"].weight.grad.abs().sum() > 0


def test_disabled_or_merged_adapter_gives_the_base_weight(adapted):
    from sakura_trl.lora_head import route_head_through_adapter

    route_head_through_adapter(adapted)
    head = adapted.get_output_embeddings()
    base = head.get_base_layer().weight
    with adapted.disable_adapter():  # the DPO reference
        assert head.weight is base
        fused, full = fused_and_full(adapted)
        torch.testing.assert_close(fused, full, atol=1e-4, rtol=1e-4)
    effective = head.weight.detach().clone()
    merged = adapted.merge_and_unload()
    torch.testing.assert_close(merged.get_output_embeddings().weight, effective)


def test_a_head_without_adapter_is_left_alone(tiny_model):
    from peft import LoraConfig, get_peft_model

    from sakura_trl.lora_head import route_head_through_adapter

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=4, target_modules=["q_proj"]))
    assert route_head_through_adapter(model) is False

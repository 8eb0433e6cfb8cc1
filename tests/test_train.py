"""The train stage: DPO/SFT with LoRA on trl through the engine, on tiny models and a few CPU steps."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sakura_core.engine import Engine
from sakura_core.errors import RecipeError
from sakura_core.recipe import load_recipe

TINY = "tiny:llama?layers=2&hidden=32&intermediate=64&heads=2&kv_heads=1"

# A recipe-local plugin that writes a dataset artifact per the contract (dataset/ DatasetDict + stats.json),
# so these tests depend on no other helper's stage.
DATA_PLUGIN = '''
import json
from sakura_core import hookimpl
from sakura_core.stage import Options, StageKind


class PrefOptions(Options):
    rows: int = 8
    shape: str = "preference"   # "preference", "sft", or "no_rejected"


class PrefData(StageKind):
    Options = PrefOptions

    def run(self, ctx):
        import datasets
        o = ctx.options
        rows = []
        for i in range(o.rows):
            prompt = [{"role": "system", "content": "You are helpful."},
                      {"role": "user", "content": f"What is {i} plus {i}? Answer briefly."}]
            good = [{"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]
            bad = [{"role": "assistant", "content": f"I think it is {2 * i + 1}, the sky is blue today."}]
            if o.shape == "sft":
                rows.append({"messages": prompt + good})
            elif o.shape == "no_rejected":
                rows.append({"prompt": prompt, "chosen": good})
            else:
                rows.append({"prompt": prompt, "chosen": good, "rejected": bad})
        dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})
        dd.save_to_disk(str(ctx.output_dir / "dataset"))
        (ctx.output_dir / "stats.json").write_text(json.dumps({"train": len(rows)}))
        return {"rows": len(rows)}


@hookimpl
def sakura_register_stage_kinds(register):
    register("test_prefs", PrefData())
'''


def write_recipe(tmp_path: Path, body: str, name: str = "r.toml") -> Path:
    (tmp_path / "prefs_plugin.py").write_text(DATA_PLUGIN)
    head = f'''
name = "train-test"
plugins = ["prefs_plugin.py"]
[models]
base = "{TINY}"
[stages.data]
kind = "test_prefs"
'''
    path = tmp_path / name
    path.write_text(textwrap.dedent(head) + textwrap.dedent(body))
    return path


DPO = '''
[stages.dpo]
kind = "train"
trainer = "dpo"
model = "base"
dataset = "data"
lora = { r = 4, alpha = 8, dropout = 0.0, target_modules = ["q_proj", "v_proj"] }
args = { learning_rate = 1e-3, beta = 0.1, per_device_train_batch_size = 2, max_steps = 3, max_length = 128, seed = 1 }
'''


def run(path: Path, overrides=(), **kw):
    return Engine(load_recipe(path, list(overrides))).run(**kw)


def test_dpo_lora_through_engine(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = run(write_recipe(tmp_path, DPO))
    assert result.ok, result.error
    out = result.outcome("dpo")
    art = out.artifact
    assert (art / "adapter" / "adapter_config.json").is_file()
    assert list(art.glob("*.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(art)
    assert not any("lora" in n for n, _ in model.named_parameters())  # merged
    tok = AutoTokenizer.from_pretrained(art)
    assert "### Assistant" in tok.chat_template
    m = out.metrics
    assert m["steps"] == 3
    for key in ("loss", "reward_accuracy", "reward_margin", "tokens_per_s", "mfu", "peak_memory_gib"):
        assert isinstance(m[key], (int, float)), key
    manifest = json.loads((art / "sakura-artifact.json").read_text())
    assert manifest["metrics"]["steps"] == 3
    # The merged weights differ from the base model: the adapter trained and was merged.
    base = AutoModelForCausalLM.from_pretrained(_base_path(result))
    q_base = base.model.layers[0].self_attn.q_proj.weight
    q_new = model.model.layers[0].self_attn.q_proj.weight
    assert not q_base.allclose(q_new)


def _base_path(result) -> Path:
    store = result.recipe.store_dir
    fp = result.plan.sources["base"].fingerprint
    return store / "artifacts" / fp

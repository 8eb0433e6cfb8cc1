"""The merge stage end to end: the Sakura SLERP recipe through the engine, checked against mergekit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sakura_core.engine import Engine
from sakura_core.recipe import load_recipe

SAKURA_SLERP = """
name = "sakura-slerp"
[models]
sauerkraut = "tiny:llama?seed=1&layers=4"
solar = "tiny:llama?seed=2&layers=4"

[stages.merge]
kind = "merge"
merge_method = "slerp"
base_model = "solar"
slices = [ { sources = [ { model = "sauerkraut", layer_range = [0, 4] }, { model = "solar", layer_range = [0, 4] } ] } ]
parameters.t = [ { filter = "self_attn", value = [0, 0.5, 0.3, 0.7, 1] },
                 { filter = "mlp", value = [1, 0.5, 0.7, 0.3, 0] },
                 { value = 0.5 } ]
tokenizer_source = "union"
dtype = "float16"

[stages.merge_mergekit]   # the same merge through mergekit's own executor, for comparison
kind = "merge"
engine = "mergekit"
merge_method = "slerp"
base_model = "solar"
slices = [ { sources = [ { model = "sauerkraut", layer_range = [0, 4] }, { model = "solar", layer_range = [0, 4] } ] } ]
parameters.t = [ { filter = "self_attn", value = [0, 0.5, 0.3, 0.7, 1] },
                 { filter = "mlp", value = [1, 0.5, 0.7, 0.3, 0] },
                 { value = 0.5 } ]
tokenizer_source = "union"
dtype = "float16"
"""


def load_tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def test_sakura_slerp_recipe_runs_and_matches_mergekit(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe_path = tmp_path / "sakura.toml"
    recipe_path.write_text(SAKURA_SLERP)
    recipe = load_recipe(recipe_path)
    assert recipe.stages["merge"].references == {
        "base_model": "solar",
        "slices[0].sources[0].model": "sauerkraut",
        "slices[0].sources[1].model": "solar",
    }
    result = Engine(recipe).run()
    assert result.ok, result.error
    native = result.outcome("merge")
    assert native.metrics["engine"] == "native" and native.metrics["tensors"] > 0
    assert result.outcome("merge_mergekit").metrics["engine"] == "mergekit"

    ours = load_tensors(native.artifact)
    theirs = load_tensors(result.outcome("merge_mergekit").artifact)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].dtype == torch.float16
        assert torch.equal(ours[name], theirs[name]), name

    # the gradient really varies over depth: layer 0 self_attn is the base (t=0), layer 3 the other (t=1)
    model = AutoModelForCausalLM.from_pretrained(native.artifact)
    tokenizer = AutoTokenizer.from_pretrained(native.artifact)
    assert model.config.num_hidden_layers == 4
    assert "### User:" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    ids = tokenizer("hello world", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**ids).logits).all()
    record = (native.artifact / "mergekit_config.yml").read_text()
    assert "merge_method: slerp" in record and "model: sauerkraut" in record

    # unchanged recipe: nothing runs again
    again = Engine(load_recipe(recipe_path)).run()
    assert [o.status for o in again.outcomes] == ["cached", "cached"]


def test_gradient_endpoints_pick_each_model(tmp_path, tiny_model_factory):
    """t = 0 gives the base's tensor, t = 1 the other model's, as mergekit defines slerp."""
    import torch

    from sakura_merge.config import MergeConfig
    from sakura_merge.methods import builtin_methods
    from sakura_merge.runner import execute_merge

    a, b = tiny_model_factory(seed=1), tiny_model_factory(seed=2)
    config = MergeConfig.model_validate(
        {
            "merge_method": "slerp",
            "base_model": "b",
            "slices": [{"sources": [{"model": "a", "layer_range": [0, 4]}, {"model": "b", "layer_range": [0, 4]}]}],
            "parameters": {"t": [{"filter": "self_attn", "value": [0, 1]}, {"value": 0.5}]},
        }
    )
    out = tmp_path / "out"
    out.mkdir()
    execute_merge(config, builtin_methods()["slerp"], {"a": str(a), "b": str(b)}, out)
    merged, ta, tb = load_tensors(out), load_tensors(a), load_tensors(b)
    name0, name3 = "model.layers.0.self_attn.q_proj.weight", "model.layers.3.self_attn.q_proj.weight"
    assert torch.equal(merged[name0], tb[name0])
    assert torch.allclose(merged[name3], ta[name3], atol=1e-6)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4


def test_every_progress_bar_of_a_merge_is_closed(tmp_path, tiny_model_factory):
    """The live view drops a step's bar when the step ends: none is left behind after the merge."""
    from sakura_core.progress import Reporter
    from sakura_merge.config import MergeConfig
    from sakura_merge.methods import builtin_methods
    from sakura_merge.runner import execute_merge

    class Recorder(Reporter):
        def __init__(self):
            self.open: set[str] = set()

        def _task_started(self, task):
            self.open.add(task.description)

        def _task_updated(self, task):
            pass

        def _task_done(self, task):
            self.open.discard(task.description)

    reporter = Recorder()
    config = MergeConfig.model_validate({"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 1.0}}]})
    out = tmp_path / "out"
    out.mkdir()
    execute_merge(config, builtin_methods()["linear"], {"a": str(tiny_model_factory(seed=1))}, out,
                  progress=lambda description, total: reporter.task(description, total))
    assert reporter.open == set()


LORA_RECIPE = """
name = "lora-merge"
[models]
a = "tiny:llama?seed=1&layers=4"
b = "tiny:llama?seed=2&layers=4"

[stages.merge]
kind = "merge"
merge_method = "task_arithmetic"
base_model = "a"
models = [ { model = "a+./style-lora", parameters = { weight = 0.7 } },
           { model = "b", parameters = { weight = 0.3, t = 0.5 } } ]
dtype = "float32"
"""


def test_a_recipe_merges_model_plus_lora_fingerprinted_by_content(tmp_path, tiny_model_factory):
    """``model = "a+./style-lora"``: the stage reads model a, the LoRA directory is an input by content, and the
    merge is what mergekit makes of the same configuration; a parameter mergekit ignores is a logged warning."""
    import torch

    from test_mergekit_conformance import make_lora

    make_lora(tiny_model_factory(seed=1, layers=4), tmp_path / "style-lora")
    recipe_path = tmp_path / "lora.toml"
    recipe_path.write_text(LORA_RECIPE)
    recipe = load_recipe(recipe_path)
    assert recipe.stages["merge"].references == {"base_model": "a", "models[0].model": "a", "models[1].model": "b"}
    engine = Engine(recipe)
    before = engine.plan().stages["merge"].fingerprint
    logged = []
    engine.reporter.log = logged.append
    result = engine.run()
    assert result.ok, result.error
    outcome = result.outcome("merge")
    assert outcome.metrics["engine"] == "native"
    assert logged.count("merge: applying LoRA ./style-lora to a") == 1
    assert any("warning: models[1].parameters.t: ignored" in line for line in logged), logged

    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    plan = engine.plan()
    a_dir, b_dir = (engine.store.lookup(plan.sources[name].fingerprint).path for name in ("a", "b"))
    mergekit_out = tmp_path / "mergekit"
    config = MergeConfiguration.model_validate({
        "merge_method": "task_arithmetic", "base_model": str(a_dir), "dtype": "float32",
        "models": [{"model": f"{a_dir}+{tmp_path / 'style-lora'}", "parameters": {"weight": 0.7}},
                   {"model": str(b_dir), "parameters": {"weight": 0.3}}]})
    run_merge(config, str(mergekit_out), MergeOptions(lora_merge_cache=str(tmp_path / "cache"), write_model_card=False,
                                                       quiet=True))
    ours, theirs = load_tensors(outcome.artifact), load_tensors(mergekit_out)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    config_file = tmp_path / "style-lora" / "adapter_config.json"
    config_file.write_text(config_file.read_text() + "\n")
    assert Engine(load_recipe(recipe_path)).plan().stages["merge"].fingerprint != before

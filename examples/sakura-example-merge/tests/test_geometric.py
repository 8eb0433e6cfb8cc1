"""The example method through sakura's real executor and engine, on generated tiny models."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sakura_example_merge.plugin
from sakura_core.plugins import Plugins


def plugins_with_example() -> Plugins:
    plugins = Plugins(entry_points=False)
    plugins.register_object(sakura_example_merge.plugin, "example_merge")
    return plugins


def test_geometric_merge_of_two_tiny_models(tmp_path):
    import torch
    from safetensors.torch import load_file

    from sakura_merge.config import MergeConfig
    from sakura_merge.runner import execute_merge
    from sakura_models.tiny import TinyOptions, generate_tiny_model

    for name, seed in (("a", 1), ("b", 2)):
        generate_tiny_model(TinyOptions(seed=seed, layers=2), tmp_path / name)
    config = MergeConfig.model_validate(
        {"merge_method": "geometric", "dtype": "float32",
         "models": [{"model": "a", "parameters": {"weight": 3.0}}, {"model": "b"}]}
    )
    out = tmp_path / "out"
    out.mkdir()
    method = plugins_with_example().merge_methods.get("geometric")
    metrics = execute_merge(config, method, {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}, out)
    assert metrics["engine"] == "native"

    name = "model.layers.1.mlp.up_proj.weight"
    a = load_file(tmp_path / "a" / "model.safetensors")[name]
    b = load_file(tmp_path / "b" / "model.safetensors")[name]
    merged = load_file(out / "model.safetensors")[name]
    expected = torch.sign(3 * a + b) * torch.exp(0.75 * torch.log(a.abs() + 1e-12) + 0.25 * torch.log(b.abs() + 1e-12))
    assert torch.allclose(merged, expected, rtol=1e-5, atol=1e-7)
    lo, hi = torch.minimum(a.abs(), b.abs()), torch.maximum(a.abs(), b.abs())
    assert bool(((merged.abs() >= lo * (1 - 1e-5)) & (merged.abs() <= hi * (1 + 1e-5))).all())


def test_options_are_checked_before_any_work(tmp_path):
    from sakura_core.errors import RecipeError
    from sakura_core.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    base = """
    [models]
    a = "tiny:llama?seed=1"
    b = "tiny:llama?seed=2"
    [stages.merge]
    kind = "merge"
    merge_method = "geometric"
    """
    for extra, expected in {
        'models = [{ model = "a", parameters = { weight = 0 } }, { model = "b" }]':
            "stages.merge.models[0].parameters.weight: input should be greater than 0",
        'models = [{ model = "a", parameters = { weigth = 2 } }, { model = "b" }]':
            "stages.merge.models[0].parameters.weigth: unknown parameter for geometric (did you mean weight?)",
    }.items():
        recipe.write_text(textwrap.dedent(base) + extra + "\n")
        with pytest.raises(RecipeError) as info:
            load_recipe(recipe, plugins=plugins_with_example())
        assert expected in str(info.value)


def test_entry_point_when_installed():
    """After ``pip install -e examples/sakura-example-merge``, ``sakura plugins`` lists the method."""
    # Asked in a fresh interpreter: this one also sees the source tree (conftest.py), and any metadata a
    # build left there, which an installed sakura does not.
    probe = [sys.executable, "-c", "import importlib.metadata as m; m.distribution('sakura-example-merge')"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("sakura-example-merge is not installed")
    result = subprocess.run([sys.executable, "-m", "sakura_core", "plugins"], capture_output=True, text=True, check=True)
    assert "example_merge" in result.stdout and "geometric" in result.stdout

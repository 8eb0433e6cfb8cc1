"""The example adapter through sakura's real dataset stage and engine, on rows in ultrafeedback_binarized's schema."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sakura_example_dataset.plugin
from sakura_core.engine import Engine
from sakura_core.plugins import Plugins
from sakura_core.recipe import load_recipe

SAMPLE = Path(__file__).parent / "data" / "ultrafeedback_binarized.sample.jsonl"  # 6 rows, the real columns


def plugins_with_example() -> Plugins:
    plugins = Plugins(entry_points=False)
    plugins.register_object(sakura_example_dataset.plugin, "example_dataset")
    return plugins


def run_dataset(tmp_path: Path, source: str, data: Path = SAMPLE):
    """Run a recipe with one dataset stage reading ``data`` through the adapter; (result, recipe path)."""
    shutil.copy(data, tmp_path / "uf.jsonl")
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent(f"""
        name = "ultrafeedback-test"
        [stages.data]
        kind = "dataset"
        sources = [{{ adapter = "ultrafeedback", path = "uf.jsonl"{source} }}]
        shuffle = false
    """))
    return Engine(load_recipe(recipe, plugins=plugins_with_example())).run(), recipe


def artifact(result):
    import datasets

    path = result.outcome("data").artifact
    return datasets.load_from_disk(str(path / "dataset"))["train"], json.loads((path / "stats.json").read_text())


def test_rows_map_to_trl_conversational_preference_format(tmp_path):
    result, _ = run_dataset(tmp_path, "")
    assert result.ok, result.error
    rows, stats = artifact(result)
    assert rows.column_names == ["prompt", "chosen", "rejected"]
    assert rows[0] == {
        "prompt": [{"role": "user", "content": "What is the capital of France?"}],
        "chosen": [{"role": "assistant", "content": "The capital of France is Paris, a city on the river Seine."}],
        "rejected": [{"role": "assistant", "content": "France's capital is Lyon."}],
    }
    assert len(rows) == 5
    assert stats["sources"][0]["rows_in"] == 6
    assert stats["dropped"] == {"chosen equals rejected": 1}  # the tie in the sample


def test_min_score_margin_drops_close_pairs(tmp_path):
    result, _ = run_dataset(tmp_path, ", options = { min_score_margin = 1.0 }")
    assert result.ok, result.error
    rows, stats = artifact(result)
    assert len(rows) == 4  # the goldfish pair (7.0 vs 6.5) and the tie (7.0 vs 7.0) are dropped
    assert stats["dropped"] == {"score margin below 1": 2}
    assert "Suggest a name for a pet goldfish." not in [r["prompt"][0]["content"] for r in rows]


def test_malformed_rows_are_dropped_with_their_reason(tmp_path):
    good = json.loads(SAMPLE.read_text().splitlines()[0])

    def variant(**changes):
        return json.dumps({**good, **changes})

    user = {"role": "user", "content": good["prompt"]}
    answer = {"role": "assistant", "content": "An answer."}
    lines = [
        json.dumps(good),
        variant(rejected=[user, {"role": "user", "content": "Are you there?"}]),
        variant(rejected=[{"role": "user", "content": "Another question entirely?"}, answer]),
        variant(chosen=[user, {"role": "robot", "content": "Beep."}]),
        variant(chosen=[user, {"role": "assistant", "content": "   "}]),
        variant(chosen=[], prompt="A prompt whose chosen column is empty."),
    ]
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    result, _ = run_dataset(tmp_path, "", data)
    assert result.ok, result.error
    rows, stats = artifact(result)
    assert len(rows) == 1
    assert stats["dropped"] == {
        "rejected does not end with an assistant message": 1,
        "chosen and rejected answer different prompts": 1,
        "malformed chosen: a message without a known role and text content": 1,
        "empty message": 1,
        "null or empty chosen": 1,
    }


def test_a_source_without_the_columns_fails_before_any_row(tmp_path):
    data = tmp_path / "orca.jsonl"
    data.write_text(json.dumps({"question": "Hi?", "chosen": "Hello.", "rejected": "No."}) + "\n")
    result, _ = run_dataset(tmp_path, "", data)
    assert not result.ok
    assert "missing column(s) prompt; expected prompt, chosen, rejected" in str(result.error)


def test_options_are_checked_before_any_work(tmp_path):
    from sakura_core.errors import RecipeError

    for extra, expected in {
        ", options = { min_score_margin = -1 }": "stages.data.sources[0].options.min_score_margin: input should be greater than or equal to 0",
        ", options = { min_score_margn = 1 }": "stages.data.sources[0].options.min_score_margn: unknown option (did you mean min_score_margin?)",
    }.items():
        with pytest.raises(RecipeError) as info:
            run_dataset(tmp_path, extra)
        assert expected in str(info.value)
    assert not (tmp_path / ".sakura").exists()


def test_entry_point_when_installed():
    """After ``pip install examples/sakura-example-dataset``, ``sakura plugins`` lists the adapter."""
    # Asked in a fresh interpreter: this one also sees the source tree (conftest.py), and any metadata a
    # build left there, which an installed sakura does not.
    probe = [sys.executable, "-c", "import importlib.metadata as m; m.distribution('sakura-example-dataset')"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("sakura-example-dataset is not installed")
    result = subprocess.run([sys.executable, "-m", "sakura_core", "plugins"], capture_output=True, text=True, check=True)
    assert "example_dataset" in result.stdout and "ultrafeedback" in result.stdout

"""The dataset stage through the engine: orca rows -> canonical preference rows, stats, caching by content."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from sakura_core.engine import Engine
from sakura_core.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
TINY_ORCA = REPO / "recipes" / "data" / "tiny_orca.jsonl"


def write(tmp_path: Path, body: str, model: Path | None = None) -> Path:
    models = f'[models]\nsolar = "{model}"\n' if model else ""
    path = tmp_path / "r.toml"
    path.write_text(f'name = "t"\n{models}' + textwrap.dedent(body))
    return path


def run(recipe: Path):
    result = Engine(load_recipe(recipe)).run()
    return result


def artifact(result, name="data") -> Path:
    outcome = result.outcome(name)
    assert outcome.status in ("ran", "cached"), outcome.error
    return Path(outcome.artifact)


def test_orca_demo_data_through_engine(tmp_path, tiny_model):
    import datasets

    (tmp_path / "data").mkdir()
    shutil.copy(TINY_ORCA, tmp_path / "data" / "tiny_orca.jsonl")
    recipe = write(
        tmp_path,
        """
        [stages.data]
        kind = "dataset"
        sources = [{ adapter = "orca", path = "data/tiny_orca.jsonl" }]
        tokenizer = "solar"
        max_length = 256
        max_prompt_length = 128
        seed = 42
        test_size = 8
        """,
        tiny_model,
    )
    result = run(recipe)
    assert result.ok, result.error
    out = artifact(result)
    data = datasets.load_from_disk(str(out / "dataset"))
    assert set(data) == {"train", "test"}
    assert (len(data["train"]), len(data["test"])) == (56, 8)
    assert data["train"].column_names == ["prompt", "chosen", "rejected"]
    source_rows = [json.loads(line) for line in TINY_ORCA.read_text().splitlines()]
    by_question = {r["question"]: r for r in source_rows}
    for row in data["train"]:
        user = row["prompt"][-1]
        assert user["role"] == "user"
        src = by_question[user["content"]]
        if src["system"]:
            assert row["prompt"][0] == {"role": "system", "content": src["system"]}
        else:
            assert len(row["prompt"]) == 1  # an empty system column adds no system message
        assert row["chosen"] == [{"role": "assistant", "content": src["chosen"]}]
        assert row["rejected"] == [{"role": "assistant", "content": src["rejected"].strip()}]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows"] == {"train": 56, "test": 8}
    assert stats["sources"][0]["rows_in"] == 64 and stats["sources"][0]["rows_out"] == 64
    assert 0 < stats["tokens"]["prompt"]["p50"] <= stats["tokens"]["total"]["p50"] <= stats["tokens"]["total"]["max"] <= 200
    metrics = result.outcome("data").metrics
    assert metrics["rows_train"] == 56 and metrics["rows_test"] == 8 and metrics["rows_dropped"] == 0

    # unchanged: cached; same-size edit of the data file: runs again (fingerprint by content, not mtime/size)
    assert run(recipe).outcome("data").status == "cached"
    path = tmp_path / "data" / "tiny_orca.jsonl"
    path.write_text(path.read_text().replace("Paris", "PARIS"))
    again = run(recipe)
    assert again.outcome("data").status == "ran"
    assert artifact(again) != out

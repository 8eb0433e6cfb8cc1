"""Bad input to the dataset stage: one clear line, a non-zero exit, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sakura_core.engine import Engine
from sakura_core.errors import RecipeError, SakuraError
from sakura_core.recipe import load_recipe

from test_data import MATH, ORCA
from test_data import write_recipe as recipe




def stage(sources: str, extra: str = "") -> str:
    return f'[stages.data]\nkind = "dataset"\nsources = {sources}\n{extra}\n'


def failure(path: Path) -> str:
    """Run the recipe; it must fail without leaving an artifact; returns the error line."""
    engine = Engine(load_recipe(path))
    result = engine.run()
    assert not result.ok
    message = str(result.error)
    assert "\n" not in message and "Traceback" not in message
    store = path.parent / ".sakura"
    artifacts = [p for p in (store / "artifacts").glob("*") if (p / "dataset").exists() or (p / "stats.json").exists()]
    assert artifacts == []
    assert not any((store / "tmp").glob("*")) if (store / "tmp").exists() else True
    return message


def test_missing_columns_fail_before_any_processing_cli(tmp_path, sakura):
    """A schema mismatch in the second source fails before the first is mapped: source, expected, found."""
    path = recipe(
        tmp_path,
        stage(f'[{{ adapter = "orca", path = "data/{ORCA.name}" }}, {{ adapter = "orca", path = "data/{MATH.name}" }}]'),
        files=[ORCA, MATH],
    )
    result = sakura("run", path, cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "missing column" in line]
    assert lines == [
        f"stage data: source 1 (data/{MATH.name}, adapter orca): missing column(s) question, chosen, rejected; "
        "expected question, chosen, rejected; found metadata, instruction, chosen_response, chosen_rating, "
        "rejected_response, rejected_rating"
    ]
    assert "Traceback" not in result.stdout + result.stderr
    assert not list((tmp_path / ".sakura" / "artifacts").glob("*"))
    work = tmp_path / ".sakura" / "work"
    assert not list(work.rglob("source*.arrow")) if work.exists() else True  # nothing was mapped


def test_margin_filter_needs_rating_columns(tmp_path):
    rows = [{k: v for k, v in json.loads(line).items() if k != "rejected_rating"} for line in MATH.read_text().splitlines()]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    message = failure(recipe(tmp_path, stage('[{ adapter = "math", path = "data/m.jsonl", options = { min_rating_margin = 1 } }]')))
    assert "missing column(s) rejected_rating" in message


def test_null_and_empty_fields_are_dropped_and_counted(tmp_path):
    good = json.loads(ORCA.read_text().splitlines()[1])
    rows = [
        good,
        dict(good, question="Another question?", chosen=None),
        dict(good, question="   "),
        dict(good, question="Third question?", rejected=" "),
        dict(good, question="Fourth question?", system=None),  # the optional system may be null
    ]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = Engine(load_recipe(recipe(tmp_path, stage('[{ adapter = "orca", path = "data/x.jsonl" }]')))).run()
    assert result.ok, result.error
    stats = json.loads((Path(result.outcome("data").artifact) / "stats.json").read_text())
    assert stats["dropped"] == {"null or empty chosen": 1, "null or empty question": 1, "null or empty rejected": 1}
    assert stats["sources"][0]["rows_in"] == 5 and stats["rows"] == {"train": 2}
    assert result.outcome("data").metrics["rows_dropped"] == 3


# (what a row holds, the adapter, the rows (the bad one third), the line's end). A JSON-lines column whose
# rows disagree on the type used to be read back as JSON text, quoting every value of the column
# ('"Paws on the Long Road Home"'), and the run exited 0.
ORCA_ROW = {"system": "", "question": "Name a book.", "chosen": "Paws on the Long Road Home", "rejected": " A book."}
MATH_ROW = {"instruction": "1 + 1?", "chosen_response": "Two.", "rejected_response": "Three."}
WRONG_TYPES = [
    ("question a list", "orca", [ORCA_ROW, ORCA_ROW, dict(ORCA_ROW, question=["a", "b"], chosen={"x": 1})],
     "row 3: question is a list, not text"),
    ("chosen an object", "orca", [ORCA_ROW, ORCA_ROW, dict(ORCA_ROW, chosen={"text": "x"})], "row 3: chosen is an object, not text"),
    ("rejected a number", "orca", [ORCA_ROW, ORCA_ROW, dict(ORCA_ROW, rejected=3)], "row 3: rejected is a number (3), not text"),
    ("system a boolean", "orca", [ORCA_ROW, ORCA_ROW, dict(ORCA_ROW, system=True)], "row 3: system is a boolean, not text"),
    ("every chosen a number", "orca", [dict(ORCA_ROW, chosen=i) for i in range(3)], "row 1: chosen is a number (0), not text"),
    ("math response a list", "math", [MATH_ROW, MATH_ROW, dict(MATH_ROW, chosen_response=["2"])],
     "row 3: chosen_response is a list, not text"),
    ("columns prompt a number", "columns", [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 2
     + [{"prompt": 7, "chosen": "c", "rejected": "r"}], "row 3: prompt is a number (7), not text or a list of messages"),
    ("columns messages not objects", "columns", [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 2
     + [{"prompt": "p", "chosen": ["c"], "rejected": "r"}], "row 3: chosen is a list of something other than {role, content} messages"),
]


@pytest.mark.parametrize("what, adapter, rows, expected", WRONG_TYPES, ids=[w[0] for w in WRONG_TYPES])
def test_a_value_of_the_wrong_type_names_the_file_and_row(tmp_path, what, adapter, rows, expected):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    message = failure(recipe(tmp_path, stage(f'[{{ adapter = "{adapter}", path = "data/x.jsonl" }}]')))
    assert message == f"stage data: source 0 (data/x.jsonl, adapter {adapter}): {expected}"


def test_a_mixed_column_the_adapter_accepts_keeps_each_rows_own_value(tmp_path):
    """The columns adapter takes text or a message list: a column mixing both is read row by row, not as JSON."""
    import datasets

    rows = [{"prompt": "Name a book.", "chosen": "Paws on the Long Road Home", "rejected": "A book."},
            {"prompt": [{"role": "user", "content": "Name a film."}], "chosen": "Heat", "rejected": "A film."}]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = Engine(load_recipe(recipe(tmp_path, stage('[{ adapter = "columns", path = "data/x.jsonl" }]')))).run()
    assert result.ok, result.error
    saved = datasets.load_from_disk(str(Path(result.outcome("data").artifact) / "dataset"))["train"]
    prompts = sorted(row["prompt"][0]["content"] for row in saved)
    assert prompts == ["Name a book.", "Name a film."]
    assert sorted(row["chosen"][0]["content"] for row in saved) == ["Heat", "Paws on the Long Road Home"]


@pytest.mark.parametrize(
    "lines, expected",
    [
        (['{"question": "a", "chosen": "b", "rejected": "c"}', '{"question": "d", "chosen": "e"', "{}"],
         "line 2: malformed JSON (Expecting ',' delimiter at column 32)"),
        (['{"question": "a", "chosen": "b", "rejected": "c"}', "", '["not", "an", "object"]'],
         "line 3: malformed JSON (expected an object, got list)"),
    ],
)
def test_malformed_json_line_names_file_and_line(tmp_path, lines, expected):
    (tmp_path / "data").mkdir()
    bad = tmp_path / "data" / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    message = failure(recipe(tmp_path, stage('[{ adapter = "orca", path = "data/bad.jsonl" }]')))
    assert f"{bad}: {expected}" in message


def test_empty_file(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "e.jsonl").write_text("\n")
    assert "e.jsonl is empty" in failure(recipe(tmp_path, stage('[{ adapter = "orca", path = "data/e.jsonl" }]')))


def test_a_filter_that_drops_every_row_is_an_error(tmp_path, tiny_model):
    path = recipe(
        tmp_path, stage(f'[{{ adapter = "orca", path = "data/{ORCA.name}" }}]', 'tokenizer = "solar"\nmax_length = 8'),
        tiny_model, files=[ORCA],
    )
    assert failure(path) == (
        f"stage data: source 0 (data/{ORCA.name}, adapter orca): every one of its 2 rows was dropped "
        "(longer than 8 tokens: 2)"
    )
    path = recipe(tmp_path, stage(f'[{{ adapter = "math", path = "data/{MATH.name}", options = {{ min_rating_margin = 50 }} }}]'), files=[MATH])
    assert "every one of its 8 rows was dropped (rating margin below 50: 8)" in failure(path)


def test_test_split_larger_than_the_data(tmp_path):
    path = recipe(tmp_path, stage(f'[{{ adapter = "orca", path = "data/{ORCA.name}" }}]', "test_size = 2"), files=[ORCA])
    assert "test_size 2 leaves 0 training rows of 2" in failure(path)


def test_saved_dataset_without_the_split(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list([json.loads(ORCA.read_text().splitlines()[0])])}).save_to_disk(
        str(tmp_path / "saved")
    )
    path = recipe(tmp_path, stage('[{ adapter = "orca", path = "saved", split = "validation" }]'))
    assert "no split 'validation' (has train)" in failure(path)


@pytest.mark.parametrize(
    "table, key, message",
    [
        (stage('[{ adapter = "orka", path = "data/o.jsonl" }]'), "stages.data.sources[0].adapter",
         "unknown dataset adapter 'orka' (did you mean orca?)"),
        (stage('[{ adapter = "math", path = "data/o.jsonl", options = { min_margin = 1 } }]'),
         "stages.data.sources[0].options.min_margin", "unknown option (did you mean min_rating_margin?)"),
        (stage('[{ adapter = "math", path = "data/o.jsonl", min_rating_margin = 1 }]'),
         "stages.data.sources[0].min_rating_margin",
         "unknown option (an adapter's own options go in the source's options table: options = { key = value })"),
        (stage('[{ adapter = "orca", path = "data/o.jsonl", wieght = 1 }]'), "stages.data.sources[0].wieght",
         "unknown option (did you mean weight?)"),
        (stage('[{ adapter = "math", path = "data/o.jsonl", options = { min_rating_margin = -1 } }]'),
         "stages.data.sources[0].options.min_rating_margin", "greater than or equal to 0"),
        (stage('[{ adapter = "orca", path = "data/missing.jsonl" }]'), "stages.data.sources[0].path",
         "no such file or directory"),
        (stage('[{ adapter = "orca", path = "data/o.jsonl", weight = 1, max_rows = 3 }]'), "stages.data.sources[0]",
         "either weight or max_rows"),
        (stage('[{ adapter = "orca", path = "data/o.jsonl" }]', "max_length = 10"), "stages.data",
         "set tokenizer"),
        (stage('[{ adapter = "orca", path = "data/o.jsonl" }]', 'tokenizer = "slar"'), "stages.data.tokenizer",
         "no stage or model named 'slar'"),
        (stage('[{ adapter = "orca", path = "data/o.jsonl" }, { adapter = "messages", path = "data/o.jsonl" }]'),
         "stages.data.sources", "cannot mix preference adapters and SFT adapters"),
        (stage("[]"), "stages.data.sources", "at least 1 item"),
        (stage('[{ adapter = "orca", path = "data/o.jsonl", data_dir = "preference" }]'), "stages.data.sources[0].data_dir",
         "o.jsonl is a file: data_dir chooses files in a Hub dataset or a directory"),
        (stage('[{ adapter = "orca", path = "data/saved", data_files = "*.arrow" }]'), "stages.data.sources[0].data_files",
         "saved is a saved dataset (save_to_disk): data_files does not apply"),
        (stage('[{ adapter = "orca", path = "org/name", data_files = { train = 3 } }]'), "stages.data.sources[0].data_files",
         "data_files is a path or glob pattern, a list of them, or a table of split = path(s)"),
        (stage('[{ adapter = "orca", path = "data/o.jsonl" }]', "test_size = 1.5"), "stages.data", "test_size"),
    ],
)
def test_recipe_errors_name_the_key(tmp_path, table, key, message):
    (tmp_path / "data" / "saved").mkdir(parents=True)
    (tmp_path / "data" / "saved" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    (tmp_path / "data" / "o.jsonl").write_text(ORCA.read_text())
    path = tmp_path / "r.toml"
    path.write_text('name = "t"\n' + table)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"r.toml: {key}: "), str(info.value)
    assert message in str(info.value)


def test_hub_dataset_unreachable_is_one_line(tmp_path, monkeypatch):
    """Offline, a Hub dataset that is not in the cache has no commit to fingerprint: the plan says so in one
    line, before any work."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    path = recipe(tmp_path, stage('[{ adapter = "orca", path = "no-such-org/no-such-dataset" }]'))
    with pytest.raises(SakuraError) as info:
        Engine(load_recipe(path)).run()
    message = str(info.value)
    assert message.startswith("r.toml: stages.data: dataset no-such-org/no-such-dataset@main is not in the Hugging Face cache")
    assert "\n" not in message
    artifacts = tmp_path / ".sakura" / "artifacts"
    assert not artifacts.exists() or not any(artifacts.iterdir())

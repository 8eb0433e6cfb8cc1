"""What ``sakura new-plugin NAME --kind dataset`` writes: a dataset adapter package (``string.Template`` texts)."""

from sakura_core.scaffold_templates import ScaffoldKind

DATASET_MODULE = '''\
"""``$registered``: a dataset adapter for sakura, in one class.

It reads preference pairs laid out as ``instruction`` / ``good`` / ``bad`` columns (and an optional
``system`` column) and maps each row to trl's conversational preference format: ``prompt`` (system, then
user message), ``chosen`` and ``rejected`` (one assistant message each). Change ``columns`` and
``run`` to your data's layout; ``run`` may also return several rows for one source row (a list or a
generator), or receive groups of consecutive rows (``group_by``).

sakura does the rest: it reads local jsonl / json / parquet / csv files, saved datasets or Hub datasets,
fails before any work when a column is missing, drops rows with a null or empty required column, counts
token lengths with the model's chat template, deduplicates, mixes, splits, and counts every dropped row
with its reason in the dataset's ``stats.json``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sakura_core.options import Options
from sakura_data import Adapter, Skip, preference


class ${camel}Options(Options):
    """The adapter's own keys, in a source's ``options`` table (checked when the recipe loads)."""

    skip_ties: bool = Field(True, description="drop rows whose good and bad answers are the same text")


class ${camel}Adapter(Adapter):
    description = "instruction / good / bad columns, optional system"
    Options = ${camel}Options
    columns = ("instruction", "good", "bad")  # every row needs them
    optional_columns = ("system",)  # read when the source has it
    version = "1"  # bump when the output for the same input changes: it is part of the stage's fingerprint

    def run(self, row: dict[str, Any], options: ${camel}Options) -> dict[str, Any]:
        if options.skip_ties and str(row["good"]).strip() == str(row["bad"]).strip():
            raise Skip("good equals bad")  # the reason is counted in stats.json
        return preference(row["instruction"], row["good"], row["bad"], system=row.get("system"))
'''

DATASET_PLUGIN = '''

@hookimpl
def sakura_register_dataset_adapters(register):
    from $module.adapter import ${camel}Adapter

    register("$registered", ${camel}Adapter())
'''

DATASET_DATA = '''\
{"system": "", "instruction": "Name a primary color.", "good": "Red is a primary color.", "bad": "Purple."}
{"system": "Answer with the sum only.", "instruction": "What is 2 + 3?", "good": "5", "bad": "6"}
{"system": "", "instruction": "Translate 'hello' into Spanish.", "good": "Hola.", "bad": "Bonjour."}
{"system": "", "instruction": "Is water wet?", "good": "Yes.", "bad": "Yes."}
'''

DATASET_TEST = '''

def run_dataset(tmp_path: Path, options: str = ""):
    shutil.copy(DATA / "pairs.jsonl", tmp_path / "pairs.jsonl")
    return run_recipe(tmp_path, """
        [stages.data]
        kind = "dataset"
        sources = [{ adapter = "$registered", path = "pairs.jsonl"%s }]
        shuffle = false
    """ % options)


def load(result):
    import datasets

    artifact = result.outcome("data").artifact
    return datasets.load_from_disk(str(artifact / "dataset"))["train"], json.loads((artifact / "stats.json").read_text())


def test_rows_map_to_trl_preference_format(tmp_path):
    result = run_dataset(tmp_path)
    assert result.ok, result.error
    rows, stats = load(result)
    assert len(rows) == 3
    assert rows[1] == {
        "prompt": [{"role": "system", "content": "Answer with the sum only."}, {"role": "user", "content": "What is 2 + 3?"}],
        "chosen": [{"role": "assistant", "content": "5"}],
        "rejected": [{"role": "assistant", "content": "6"}],
    }
    assert rows[0]["prompt"] == [{"role": "user", "content": "Name a primary color."}]  # an empty system is left out
    assert stats["dropped"] == {"good equals bad": 1}


def test_adapter_option(tmp_path):
    result = run_dataset(tmp_path, ", options = { skip_ties = false }")
    assert result.ok, result.error
    rows, stats = load(result)
    assert len(rows) == 4 and stats["dropped"] == {}


def test_options_are_checked_before_any_work(tmp_path):
    with pytest.raises(RecipeError) as info:
        run_dataset(tmp_path, ", options = { skip_tie = false }")
    assert "stages.data.sources[0].options.skip_tie: unknown option (did you mean skip_ties?)" in str(info.value)
    assert not (tmp_path / ".sakura").exists()
'''

DATASET_USAGE = '''\
[stages.data]
kind = "dataset"
sources = [{ adapter = "$registered", path = "data/pairs.jsonl", options = { skip_ties = true } }]
tokenizer = "merge"       # lengths counted with this model's chat template
max_length = 1024'''

DATASET_ABOUT = '''\
It adds the dataset adapter `$registered`, for preference pairs in `instruction` / `good` / `bad`
columns (and an optional `system` column), mapped to trl's conversational preference format. An adapter
is **one class**: the columns it needs, an options model for its own keys, and `run`, which maps one row
to a canonical row, or to several (a list or a generator), or drops it with `Skip("reason")`, counted in
the dataset's `stats.json`.'''

DATASET_TESTS = '''\
The tests run a dataset stage through sakura's engine on `tests/data/pairs.jsonl` and check the rows,
the option and the dropped-row counts in `stats.json`.'''


SCAFFOLD = ScaffoldKind(
    title="A dataset adapter",
    description="A dataset adapter for sakura",
    implementation="adapter.py",
    module=DATASET_MODULE,
    plugin=DATASET_PLUGIN,
    test=DATASET_TEST,
    usage=DATASET_USAGE,
    about=DATASET_ABOUT,
    tests=DATASET_TESTS,
    data=DATASET_DATA,
)

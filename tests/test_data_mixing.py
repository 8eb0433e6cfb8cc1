"""The bounded-memory pieces of the dataset stage: worker mapping, dedup partitions, sampling, shuffle buckets.

The stage's result must not depend on how the work is cut up (batch size, worker count, shuffle buckets,
dedup partitions); the pieces are checked against the plain in-memory computation they replace.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from test_data import MATH, TINY_ORCA, TOXIC, built, run, write_recipe


def cut_up_the_same(tmp_path, monkeypatch, body: str, model: Path, files=(), plugins=None) -> dict:
    """Run a dataset stage whole, then cut up every way there is (batches of 3, 2 workers, 5 dedup partitions
    sorted a few entries at a time, many shuffle buckets): the same splits and stats; returns the stats."""
    import sakura_data.build as build
    import sakura_data.mixing as mixing

    shufflers = []

    class CountingShuffler(mixing.Shuffler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            shufflers.append(self)

    monkeypatch.setattr(build, "Shuffler", CountingShuffler)
    recipe = write_recipe(tmp_path, body, model=model, files=files)
    whole, whole_stats = built(run(recipe, plugins))
    assert shufflers[-1].buckets == 1

    monkeypatch.setattr(mixing, "BUCKET_BYTES", 2000)
    monkeypatch.setattr(mixing, "PARTITION_ROWS", 7)
    monkeypatch.setattr(build, "partitions_for", lambda rows: 5)
    recipe.write_text(recipe.read_text() + "batch_size = 3\nnum_proc = 2\n")
    cut, cut_stats = built(run(recipe, plugins))
    assert shufflers[-1].buckets > 5
    differ = [split for split in ("train", "test") if cut[split].to_list() != whole[split].to_list()]
    assert differ == []  # (pytest's diff of two long lists of rows would take minutes)
    assert cut_stats == whole_stats
    return whole_stats


def test_the_result_does_not_depend_on_batches_workers_buckets_or_partitions(tmp_path, monkeypatch, tiny_model):
    body = f"""
        [stages.data]
        kind = "dataset"
        sources = [
          {{ adapter = "orca", path = "data/{TINY_ORCA.name}", max_rows = 40 }},
          {{ adapter = "math", path = "data/{MATH.name}", weight = 0.5 }},
          {{ adapter = "toxic", path = "data/{TOXIC.name}", weight = 2.5 }},
          {{ adapter = "orca", path = "data/{TINY_ORCA.name}" }},
        ]
        tokenizer = "solar"
        max_length = 200
        test_size = 0.25
        seed = 7
        """
    whole_stats = cut_up_the_same(tmp_path, monkeypatch, body, tiny_model, files=[TINY_ORCA, MATH, TOXIC])
    # the fourth source repeats the first: all its rows are duplicates, and the toxic rows come 2 or 3 times
    assert whole_stats["sources"][3]["dropped"]["duplicate prompt"] == whole_stats["sources"][3]["rows_in"]
    assert [s["rows_out"] for s in whole_stats["sources"]][1:] == [4, 15, 0]


def test_nor_with_adapters_that_expand_rows_or_read_groups(tmp_path, monkeypatch, tiny_model):
    """Rows made per source row (all pairs of rated answers) and per group (pairs of responses), mixed with a
    1:1 source whose prompts they repeat: mapped rows are numbered the same however the work is cut."""
    from test_data_adapters import completions, helpsteer_rows, plugins_with_examples, write_jsonl

    (tmp_path / "data").mkdir()
    questions = [f"Question number {i}?" for i in range(30)]
    write_jsonl(tmp_path / "data" / "rated.jsonl", [
        {"instruction": q, "completions": completions(*[(i * 7 + k * 3) % 5 for k in range(i % 5)])}
        for i, q in enumerate(questions)
    ])
    # groups of 1 to 4 responses, 75 rows: groups straddle batches of 3 and the workers' cut (row 37)
    responses = [("Lead-in.", "Yes.", 1), ("Lead-in.", "No.", 0)] + [
        (q, f"Response {k} to {q}", (i + k * 2) % 5) for i, q in enumerate(questions[::-1]) for k in range(1 + i % 4)
    ]
    write_jsonl(tmp_path / "data" / "helpsteer.jsonl", helpsteer_rows(responses))
    write_jsonl(tmp_path / "data" / "qa.jsonl", [{"prompt": q, "chosen": "Yes.", "rejected": "No."} for q in questions[::4]])
    body = """
        [stages.data]
        kind = "dataset"
        sources = [
          { adapter = "toxic", path = "data/qa.jsonl" },
          { adapter = "rated_completions", path = "data/rated.jsonl", weight = 0.7 },
          { adapter = "response_pairs", path = "data/helpsteer.jsonl", weight = 1.5 },
        ]
        tokenizer = "solar"
        max_length = 200
        test_size = 0.25
        seed = 5
        """
    stats = cut_up_the_same(tmp_path, monkeypatch, body, tiny_model, plugins=plugins_with_examples())
    qa, rated, pairs = stats["sources"]
    assert rated["rows_made"] > rated["rows_in"] and pairs["rows_made"] < pairs["rows_in"]
    assert rated["dropped"]["duplicate prompt"] > 0 and pairs["dropped"]["duplicate prompt"] > 0
    assert {"adapter made no rows", "not two responses"} <= set(rated["dropped"]) | set(pairs["dropped"])


def test_read_rows_cuts_exact_ranges_across_files_and_batches(tmp_path):
    import datasets

    from sakura_data.workers import read_rows

    files = []
    for f in range(3):
        part = datasets.Dataset.from_dict({"x": list(range(f * 10, f * 10 + 10)), "y": [str(i) for i in range(10)]})
        path = tmp_path / f"part{f}.arrow"
        part.map(lambda b: b, batched=True, batch_size=4, cache_file_name=str(path))  # batches of 4 in each file
        files.append(str(path))
    for start, stop, size in [(0, 30, 7), (5, 23, 4), (9, 11, 100), (29, 30, 1)]:
        tables = list(read_rows(files, ["x"], start, stop, size))
        assert [v for t in tables for v in t.column("x").to_pylist()] == list(range(start, stop))
        assert all(t.num_rows == size for t in tables[:-1]) and 0 < tables[-1].num_rows <= size
        assert all(t.column_names == ["x"] for t in tables)


@pytest.mark.parametrize("partition_rows", [250_000, 2])
def test_find_duplicates_keeps_the_earliest_unit_of_each_prompt(tmp_path, monkeypatch, partition_rows):
    import sakura_data.mixing as mixing

    monkeypatch.setattr(mixing, "PARTITION_ROWS", partition_rows)  # 2: the partition is sorted in slices
    # (hash, row, unit) numbered within each part; the parts' first rows are global rows 0, 10 and 20
    entries = {
        0: [(7, 3, 3), (5, 0, 0), (7, 1, 1)],
        1: [(-2, 5, 5), (5, 4, 4), (9, 6, 6), (9, 7, 6)],  # rows 16 and 17: one unit, one prompt
        2: [(-2, 2, 2), (11, 1, 1), (9, 6, 6)],  # row 26: numbered 6 in its part, like row 16
    }
    files = []
    for part, rows in entries.items():
        path = tmp_path / f"w{part}.keys0"
        np.array(rows, dtype=np.int64).tofile(path)
        files.append(path)
    assert mixing.find_duplicates([files], [0, 10, 20]).tolist() == [3, 14, 22, 26]


def test_percentiles_from_the_histogram_equal_numpys():
    from sakura_data.mixing import Histogram

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100, 1001):
        values = rng.integers(0, 300, size=n)
        histogram = Histogram()
        for chunk in np.array_split(values, 4):
            histogram.add(chunk)
        summary = histogram.summary((50, 90, 95, 99))
        for p in (50, 90, 95, 99):
            assert summary[f"p{p}"] == int(np.percentile(values, p, method="higher")), (n, p)
        assert summary["max"] == values.max() and summary["mean"] == round(float(values.mean()), 1)


@pytest.mark.parametrize(("kept", "target"), [(1000, 300), (1000, 2500), (10, 10), (10, 0)])
def test_the_sampler_takes_exactly_the_target_whatever_the_batches(kept, target):
    from sakura_data.mixing import Sampler

    rows = np.arange(kept) * 3 + 11  # kept rows are any increasing global row numbers
    whole = Sampler(kept, target, seed=1, salt=0).take(rows)
    sampler = Sampler(kept, target, seed=1, salt=0)
    pieces = np.concatenate([sampler.take(part) for part in np.array_split(rows, [1, 5, 333, 334])])
    assert whole.sum() == target and (pieces == whole).all()
    assert set(whole.tolist()) <= {target // kept, target // kept + 1}


def test_the_sampler_is_uniform_over_the_rows():
    from sakura_data.mixing import Sampler

    rows = np.arange(100)
    chosen = sum(Sampler(100, 30, seed=seed, salt=0).take(rows) for seed in range(400))
    # each row is taken with probability 0.3: 120 of 400 times, sd ~9; early and late rows alike
    assert 80 < chosen.min() and chosen.max() < 160
    assert abs(chosen[:50].mean() - chosen[50:].mean()) < 8


@pytest.mark.parametrize("num_proc", [1, 2])
def test_an_adapter_that_raises_is_one_line_naming_the_source(tmp_path, num_proc):
    plugin = tmp_path / "broken_adapter.py"
    plugin.write_text(textwrap.dedent('''
        from sakura_core import hookimpl
        from sakura_data import Adapter, preference

        class Broken(Adapter):
            columns = ("q", "good", "bad")

            def run(self, row, options):
                if row["q"] == "boom":
                    raise ValueError("cannot parse " + row["q"])
                return preference(row["q"], row["good"], row["bad"])

        @hookimpl
        def sakura_register_dataset_adapters(register):
            register("broken", Broken())
        '''))
    rows = [{"q": q, "good": "a", "bad": "b"} for q in ("one", "two", "three", "boom")]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent(f"""
        name = "t"
        plugins = ["broken_adapter.py"]
        [stages.data]
        kind = "dataset"
        sources = [{{ adapter = "broken", path = "qa.jsonl" }}]
        num_proc = {num_proc}
        """))
    outcome = run(recipe).outcome("data")
    assert outcome.status == "failed"
    message = str(outcome.error)
    assert "\n" not in message
    prefix = "stage data: source 0 (qa.jsonl, adapter broken): row 4: ValueError: cannot parse boom (traceback in "
    assert message.startswith(prefix) and message.endswith(".log)"), message
    log = Path(message[len(prefix):-1])
    assert log.parent == tmp_path / ".sakura" / "logs"
    traceback = log.read_text()  # the adapter's own frame, written by the worker that ran it
    assert "broken_adapter.py" in traceback and 'raise ValueError("cannot parse " + row["q"])' in traceback
    assert not list(Path(tmp_path / ".sakura").rglob("stats.json"))
    assert not list(Path(tmp_path / ".sakura").glob("tmp/*"))



def test_without_dedup_repeated_prompts_are_all_kept(tmp_path, monkeypatch):
    import sakura_data.build as build

    partitions = []
    real = build.map_source_rows
    monkeypatch.setattr(build, "map_source_rows", lambda job, *a: partitions.append(job.partitions) or real(job, *a))
    body = f"""
        [stages.data]
        kind = "dataset"
        sources = [{{ adapter = "toxic", path = "data/{TOXIC.name}" }}, {{ adapter = "toxic", path = "data/{TOXIC.name}" }}]
        dedup = false
        """
    data, stats = built(run(write_recipe(tmp_path, body, files=[TOXIC])))
    rows = len(TOXIC.read_text().splitlines())
    assert len(data["train"]) == 2 * rows and stats["dropped"] == {}
    assert partitions == [0, 0]  # no prompt hashes are written when nothing deduplicates

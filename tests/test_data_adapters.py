"""Adapters that make zero, one or several rows per source row, and adapters that read groups of rows.

Two example adapters, registered in-process, run through the real engine: every pair of rated answers of
a prompt (UltraFeedback's raw ``completions``), and consecutive rows paired by prompt (HelpSteer2: two
rated responses per prompt).
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from sakura_core import hookimpl
from sakura_core.plugins import Plugins
from sakura_data import Adapter, Skip, preference

from test_data import built, run


# -- the example adapters --------------------------------------------------------------------------
class RatedCompletionsAdapter(Adapter):
    """UltraFeedback's raw layout: an ``instruction`` and its ``completions`` (``response``, ``overall_score``).

    Every pair of differently rated responses makes a row, the better one chosen: none when they all tie.
    """

    description = "instruction + completions [{response, overall_score}]: every pair of differently rated answers"
    columns = ("instruction", "completions")

    def run(self, row, options):
        ranked = sorted(row["completions"], key=lambda c: -c["overall_score"])
        for i, better in enumerate(ranked):
            for worse in ranked[i + 1:]:
                if better["overall_score"] > worse["overall_score"]:
                    yield preference(row["instruction"], better["response"], worse["response"])


class ResponsePairsAdapter(Adapter):
    """HelpSteer2's layout: consecutive rows per prompt, each a ``response`` with its ``helpfulness`` (0-4).

    The two responses of a prompt make one row, the more helpful one chosen.
    """

    description = "prompt, response, helpfulness: two consecutive rows per prompt make one preference row"
    columns = ("prompt", "response", "helpfulness")
    group_by = ("prompt",)

    def run(self, rows, options):
        if len(rows) != 2:
            raise Skip("not two responses")
        first, second = rows
        if first["helpfulness"] == second["helpfulness"]:
            raise Skip("equally helpful")
        better, worse = (first, second) if first["helpfulness"] > second["helpfulness"] else (second, first)
        return preference(first["prompt"], better["response"], worse["response"])


@hookimpl
def sakura_register_dataset_adapters(register):
    register("rated_completions", RatedCompletionsAdapter())
    register("response_pairs", ResponsePairsAdapter())


def plugins_with_examples() -> Plugins:
    plugins = Plugins()
    plugins.register_object(sys.modules[__name__], "example_adapters")
    return plugins


# -- data in their layouts ---------------------------------------------------------------------------
def completions(*scores: int, prefix: str = "answer") -> list[dict]:
    return [{"response": f"{prefix} {i} scored {s}", "overall_score": s} for i, s in enumerate(scores)]


RATED = [
    {"instruction": "Name a fruit.", "completions": completions(4, 2, 3)},  # 3 pairs
    {"instruction": "Name a colour.", "completions": completions(5, 5)},  # a tie: no row
    {"instruction": "Name a river.", "completions": completions(1)},  # one answer: no row
    {"instruction": "Name a tree.", "completions": completions(3, 1)},  # 1 pair
    {"instruction": "  name a FRUIT. ", "completions": completions(2, 1, prefix="other")},  # a later row repeats a prompt
    {"instruction": "Name a bird.", "completions": None},  # dropped before the adapter
    {"instruction": "Name a stone.", "completions": [{"response": " ", "overall_score": 5}, *completions(1)]},
]

HELPSTEER = [
    ("Say hi.", "Hi!", 3), ("Say hi.", "Go away.", 1),  # a pair
    ("Count to two.", "One, two.", 2), ("Count to two.", "1 2", 2),  # a tie
    ("Spell cat.", "C-A-T.", 4),  # alone
    ("Name a month.", "May.", 1), ("Name a month.", None, 3),  # a null response leaves one row
    ("Add 2 and 2.", "5", 0), ("Add 2 and 2.", "4", 4),  # a pair, the second better
    ("Say hi.", "Hello.", 2), ("Say hi.", "...", 0),  # the same prompt again, not consecutive: another group
]


def helpsteer_rows(rows=HELPSTEER) -> list[dict]:
    return [{"prompt": p, "response": r, "helpfulness": h} for p, r, h in rows]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def dataset_recipe(tmp_path: Path, sources: str, extra: str = "") -> Path:
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'name = "t"\n[stages.data]\nkind = "dataset"\nsources = [{sources}]\n{textwrap.dedent(extra)}')
    return recipe


def texts(rows: list[dict]) -> list[tuple[str, str, str]]:
    return [(r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows]


# -- through the engine ----------------------------------------------------------------------------
def test_every_pair_of_rated_answers_makes_a_row(tmp_path):
    write_jsonl(tmp_path / "rated.jsonl", RATED)
    recipe = dataset_recipe(tmp_path, '{ adapter = "rated_completions", path = "rated.jsonl" }', "shuffle = false")
    data, stats = built(run(recipe, plugins_with_examples()))
    assert texts(data["train"].to_list()) == [
        ("Name a fruit.", "answer 0 scored 4", "answer 2 scored 3"),
        ("Name a fruit.", "answer 0 scored 4", "answer 1 scored 2"),
        ("Name a fruit.", "answer 2 scored 3", "answer 1 scored 2"),
        ("Name a tree.", "answer 0 scored 3", "answer 1 scored 1"),
    ]
    # the rows made from one source row share its prompt and stay; a later source row repeating it does not
    (source,) = stats["sources"]
    assert (source["rows_in"], source["rows_made"], source["rows_kept"], source["rows_out"]) == (7, 6, 4, 4)
    assert source["dropped"] == {
        "adapter made no rows": 2, "null or empty completions": 1, "empty message": 1, "duplicate prompt": 1,
    }


def test_consecutive_rows_of_a_prompt_make_one_row(tmp_path):
    write_jsonl(tmp_path / "helpsteer.jsonl", helpsteer_rows())
    recipe = dataset_recipe(tmp_path, '{ adapter = "response_pairs", path = "helpsteer.jsonl" }', "shuffle = false")
    data, stats = built(run(recipe, plugins_with_examples()))
    assert texts(data["train"].to_list()) == [("Say hi.", "Hi!", "Go away."), ("Add 2 and 2.", "4", "5")]
    (source,) = stats["sources"]
    assert (source["rows_in"], source["rows_made"], source["rows_kept"], source["rows_out"]) == (11, 3, 2, 2)
    assert source["dropped"] == {  # a skipped group drops each of its rows
        "equally helpful": 2, "not two responses": 2, "null or empty response": 1, "duplicate prompt": 1,
    }


@pytest.mark.parametrize(("batch_size", "num_proc"), [(1, 1), (2, 2), (3, 2), (4, 3)])
def test_groups_are_never_split_by_batches_or_workers(tmp_path, batch_size, num_proc):
    """Groups of 2 at odd offsets, 20 rows: any batch or worker cut that split one would unpair its rows."""
    pairs = [(f"Question {i}?", f"Answer {i}{s}.", h) for i in range(9) for s, h in (("a", 3), ("b", 1))]
    rows = [("Lead-in.", "Alone.", 1), *pairs, ("Tail.", "Alone.", 1)]
    write_jsonl(tmp_path / "pairs.jsonl", helpsteer_rows(rows))
    recipe = dataset_recipe(
        tmp_path, '{ adapter = "response_pairs", path = "pairs.jsonl" }',
        f"shuffle = false\nbatch_size = {batch_size}\nnum_proc = {num_proc}\n",
    )
    data, stats = built(run(recipe, plugins_with_examples()))
    assert texts(data["train"].to_list()) == [(f"Question {i}?", f"Answer {i}a.", f"Answer {i}b.") for i in range(9)]
    assert stats["dropped"] == {"not two responses": 2}


def test_group_columns_are_read_without_being_required(tmp_path):
    """A group column outside ``columns`` reaches ``run`` in every row, and may be empty; a source without it
    fails before any row is read."""
    plugin = tmp_path / "by_topic.py"
    plugin.write_text(textwrap.dedent('''
        from sakura_core import hookimpl
        from sakura_data import Adapter, preference

        class ByTopic(Adapter):
            columns = ("q", "good", "bad")
            group_by = ("topic",)

            def run(self, rows, options):
                for row in rows:
                    yield preference(f"[{row['topic']}] {row['q']}", row["good"], row["bad"])

        @hookimpl
        def sakura_register_dataset_adapters(register):
            register("by_topic", ByTopic())
        '''))
    rows = [{"topic": t, "q": f"Q{i}", "good": "g", "bad": "b"} for i, t in enumerate(["a", "a", "", "b"])]
    write_jsonl(tmp_path / "t.jsonl", rows)
    recipe = dataset_recipe(tmp_path, '{ adapter = "by_topic", path = "t.jsonl" }', "shuffle = false")
    recipe.write_text(recipe.read_text().replace('name = "t"\n', 'name = "t"\nplugins = ["by_topic.py"]\n'))
    data, _ = built(run(recipe))
    assert [r["prompt"][0]["content"] for r in data["train"]] == ["[a] Q0", "[a] Q1", "[] Q2", "[b] Q3"]

    write_jsonl(tmp_path / "t.jsonl", [{k: v for k, v in r.items() if k != "topic"} for r in rows])
    outcome = run(recipe).outcome("data")
    assert outcome.status == "failed"
    assert "missing column(s) topic; expected q, good, bad, topic" in outcome.error


@pytest.mark.parametrize("num_proc", [1, 2])
def test_a_group_adapters_bug_names_the_groups_first_row(tmp_path, num_proc):
    plugin = tmp_path / "fussy.py"
    plugin.write_text(textwrap.dedent('''
        from sakura_core import hookimpl
        from sakura_data import Adapter, preference

        class Fussy(Adapter):
            columns = ("prompt", "response")
            group_by = ("prompt",)

            def run(self, rows, options):
                return preference(rows[0]["prompt"], rows[0]["response"], rows[1]["response"])

        @hookimpl
        def sakura_register_dataset_adapters(register):
            register("fussy", Fussy())
        '''))
    rows = [{"prompt": f"P{i // 2}", "response": f"R{i}"} for i in range(14)]
    rows += [{"prompt": "Alone", "response": "R"}, {"prompt": "Last", "response": "A"}, {"prompt": "Last", "response": "B"}]
    write_jsonl(tmp_path / "f.jsonl", rows)
    recipe = dataset_recipe(tmp_path, '{ adapter = "fussy", path = "f.jsonl" }', f"num_proc = {num_proc}")
    recipe.write_text(recipe.read_text().replace('name = "t"\n', 'name = "t"\nplugins = ["fussy.py"]\n'))
    outcome = run(recipe).outcome("data")
    assert outcome.status == "failed"
    prefix = "stage data: source 0 (f.jsonl, adapter fussy): row 15: IndexError: list index out of range (traceback in "
    assert outcome.error.startswith(prefix), outcome.error
    assert "rows[1]" in Path(outcome.error[len(prefix):-1]).read_text()


# -- the pieces --------------------------------------------------------------------------------------
def process(adapter: Adapter, batch: dict[str, list], **kwargs):
    from sakura_data.rows import process_batch

    required = list(adapter.columns)
    present = required + [c for c in adapter.group_by if c not in required]
    return process_batch(
        batch, adapter=adapter, adapter_options=None, required=required, present=present, fmt="preference",
        tokenizer=None, max_length=None, max_prompt_length=None, **kwargs,
    )


def test_a_dict_a_list_a_generator_or_nothing():
    class Echo(Adapter):
        columns = ("q", "n")

        def run(self, row, options):
            rows = (preference(row["q"], f"yes {i}", "no") for i in range(row["n"]))
            if row["n"] == 1:
                return next(rows)  # a dict
            if row["n"] == 2:
                return list(rows)
            if row["n"] == 3:
                return rows  # a generator
            return [] if row["n"] == 0 else None  # nothing, two ways

    mapped = process(Echo(), {"q": ["zero", "one", "two", "three", "four"], "n": [0, 1, 2, 3, 4]})
    made = [(p[0]["content"], c[0]["content"]) for p, c, d in zip(*(mapped.columns[k] for k in ("prompt", "chosen", "_drop"))) if not d]
    assert made == [("one", "yes 0"), ("two", "yes 0"), ("two", "yes 1"), ("three", "yes 0"), ("three", "yes 1"), ("three", "yes 2")]
    assert mapped.columns["_drop"] == ["adapter made no rows", "", "", "", "", "", "", "adapter made no rows"]
    assert mapped.made == 6
    assert mapped.units == [0, 1, 2, 2, 4, 4, 4, 7]  # each mapped row's unit: the first row of its source row


def test_skip_from_a_generator_drops_what_it_had_made():
    class Halfway(Adapter):
        columns = ("q",)

        def run(self, row, options):
            yield preference(row["q"], "first", "no")
            raise Skip("changed its mind")

    mapped = process(Halfway(), {"q": ["a", "b"]})
    assert mapped.columns["_drop"] == ["changed its mind", "changed its mind"] and mapped.made == 0


def test_a_source_whose_made_rows_are_all_dropped_says_how_many_it_made(tmp_path):
    blank = [{"response": " ", "overall_score": s} for s in (3, 2, 1)]  # 3 pairs, each with empty answers
    write_jsonl(tmp_path / "blank.jsonl", [{"instruction": f"Q{i}", "completions": blank} for i in range(2)])
    recipe = dataset_recipe(tmp_path, '{ adapter = "rated_completions", path = "blank.jsonl" }')
    outcome = run(recipe, plugins_with_examples()).outcome("data")
    assert outcome.error == (
        "stage data: source 0 (blank.jsonl, adapter rated_completions): every row was dropped: 2 rows in, "
        "6 made by the adapter (empty message: 6)"
    )


def test_a_malformed_row_or_an_exception_names_the_source_row():
    from sakura_data.rows import AdapterFailed

    class Wrong(Adapter):
        columns = ("q",)
        group_by = ("g",)

        def run(self, rows, options):
            if rows[0]["q"] == "ok":
                return preference("q", "a", "b")
            if rows[0]["q"] == "text":
                return "not a row"
            if rows[0]["q"] == "strings":
                return {"prompt": "hi", "chosen": [], "rejected": []}
            raise KeyError("missing")

    for q, error in (("text", "the adapter made a str, not a row"), ("strings", "'prompt' is not a list"), ("key", "missing")):
        with pytest.raises(AdapterFailed) as info:
            process(Wrong(), {"q": ["ok", q, q], "g": [1, 2, 2]} if q == "key" else {"q": [q, q], "g": [2, 2]}, first_row=10)
        assert info.value.row == (11 if q == "key" else 10)
        assert error in str(info.value.__cause__)


def test_a_group_is_found_by_reading_only_around_the_cut(tmp_path, monkeypatch):
    import datasets

    import sakura_data.workers as workers
    from sakura_data.workers import MapJob, group_aligned

    monkeypatch.setattr(workers, "GROUP_SCAN_ROWS", 2)  # the window doubles until a group starts
    keys = [0] * 3 + [1] * 9 + [2] + [3] * 2
    path = tmp_path / "k.arrow"
    datasets.Dataset.from_dict({"k": keys, "x": list(range(len(keys)))}).map(
        lambda b: b, batched=True, batch_size=4, cache_file_name=str(path)
    )
    job = MapJob(
        files=[str(path)], columns=["k", "x"], group_by=("k",), rows=len(keys), batch_size=4, process=None,
        features=None, partitions=0, out_dir=tmp_path, name="s", label="s", log_path=None, log_name="s",
    )
    assert group_aligned(job, [0, 1, 3, 4, 12, 13, 15]) == [0, 3, 12, 13, 15]
    assert group_aligned(job, [0, 5, 15]) == [0, 12, 15]
    assert group_aligned(job, [0, 14, 15]) == [0, 15]  # the last group swallowed the cut: one worker fewer

"""The dataset stage through the engine: adapters, sources, mixing, token-aware filtering, stats, caching."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path


from sakura_core.engine import Engine
from sakura_core.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
TINY_ORCA = REPO / "recipes" / "data" / "tiny_orca.jsonl"
ORCA = FIXTURES / "orca_dpo_pairs.sample.jsonl"
MATH = FIXTURES / "distilabel_math_preference_dpo.sample.jsonl"
TOXIC = FIXTURES / "toxic_dpo_v0.1.sample.jsonl"
SHAREGPT = FIXTURES / "sharegpt_conversations.sample.jsonl"
CHAT = FIXTURES / "chat_messages.sample.jsonl"


def write_recipe(tmp_path: Path, body: str, model: Path | None = None, files=()) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    for f in files:
        shutil.copy(f, tmp_path / "data" / Path(f).name)
    models = f'[models]\nsolar = "{model}"\n' if model else ""
    path = tmp_path / "r.toml"
    path.write_text(f'name = "t"\n{models}' + textwrap.dedent(body))
    return path


def run(recipe: Path, plugins=None):
    return Engine(load_recipe(recipe, plugins=plugins)).run()


def built(result, name="data"):
    """(DatasetDict, stats) of a stage that must have succeeded."""
    import datasets

    outcome = result.outcome(name)
    assert outcome.status in ("ran", "cached"), outcome.error
    out = Path(outcome.artifact)
    return datasets.load_from_disk(str(out / "dataset")), json.loads((out / "stats.json").read_text())


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_orca_demo_data_through_engine(tmp_path, tiny_model):
    recipe = write_recipe(
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
        files=[TINY_ORCA],
    )
    result = run(recipe)
    assert result.ok, result.error
    data, stats = built(result)
    assert set(data) == {"train", "test"}
    assert (len(data["train"]), len(data["test"])) == (56, 8)
    assert data["train"].column_names == ["prompt", "chosen", "rejected"]
    by_question = {r["question"]: r for r in rows_of(TINY_ORCA)}
    seen = set()
    for split in ("train", "test"):
        for row in data[split]:
            user = row["prompt"][-1]
            assert user["role"] == "user"
            src = by_question[user["content"]]
            seen.add(user["content"])
            if src["system"]:
                assert row["prompt"][0] == {"role": "system", "content": src["system"]}
            else:
                assert len(row["prompt"]) == 1  # an empty system column adds no system message
            assert row["chosen"] == [{"role": "assistant", "content": src["chosen"]}]
            assert row["rejected"] == [{"role": "assistant", "content": src["rejected"].strip()}]
    assert len(seen) == 64  # train and test are disjoint and cover every row
    assert stats["rows"] == {"train": 56, "test": 8}
    assert stats["sources"][0]["rows_in"] == 64 and stats["sources"][0]["rows_out"] == 64
    tokens = stats["tokens"]
    assert 0 < tokens["prompt"]["p50"] <= tokens["total"]["p50"] <= tokens["total"]["max"] <= 200
    metrics = result.outcome("data").metrics
    assert metrics["rows_train"] == 56 and metrics["rows_test"] == 8 and metrics["rows_dropped"] == 0
    assert metrics["tokens_max"] == tokens["total"]["max"]

    # unchanged: cached; a same-size edit of the data file runs it again (fingerprint by content)
    assert run(recipe).outcome("data").status == "cached"
    path = tmp_path / "data" / "tiny_orca.jsonl"
    before = path.stat().st_mtime_ns
    path.write_text(path.read_text().replace("Paris", "PARIS"))
    # sakura_core.hashing memoises file hashes per (path, size, mtime) within a process; on a coarse
    # filesystem clock an edit this fast can keep the old mtime, which a real edit never does
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))
    again = run(recipe)
    assert again.outcome("data").status == "ran"
    assert again.outcome("data").artifact != result.outcome("data").artifact


def test_token_lengths_match_the_chat_template(tmp_path, tiny_model):
    """Lengths are the model's tokens for the chat-templated conversation (what trl trains on), and the
    limits drop rows by those counts, with the reason counted."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    rows = rows_of(ORCA)
    lengths = []
    for r in rows:
        prompt = ([{"role": "system", "content": r["system"]}] if r["system"] else []) + [
            {"role": "user", "content": r["question"]}
        ]
        p = len(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
        full = max(
            len(tok.apply_chat_template(prompt + [{"role": "assistant", "content": r[c].strip()}], tokenize=True, return_dict=False))
            for c in ("chosen", "rejected")
        )
        lengths.append((p, full))
    (p0, f0), (p1, f1) = lengths
    assert p0 > p1  # the first real orca row has the longer prompt
    recipe = write_recipe(
        tmp_path,
        f"""
        [stages.data]
        kind = "dataset"
        sources = [{{ adapter = "orca", path = "data/{ORCA.name}" }}]
        tokenizer = "solar"
        max_prompt_length = {p0 - 1}
        """,
        tiny_model,
        files=[ORCA],
    )
    result = run(recipe)
    data, stats = built(result)
    assert len(data["train"]) == 1
    assert data["train"][0]["prompt"][-1]["content"] == rows[1]["question"]
    assert stats["dropped"] == {f"prompt longer than {p0 - 1} tokens": 1}
    assert stats["tokens"]["prompt"]["max"] == p1 and stats["tokens"]["total"]["max"] == f1

    # max_length on prompt + longest answer: the limit exactly at the row's length keeps it
    result = run(write_recipe(tmp_path, f"""
        [stages.data]
        kind = "dataset"
        sources = [{{ adapter = "orca", path = "data/{ORCA.name}" }}]
        tokenizer = "solar"
        max_length = {f1}
        """, tiny_model))
    data, stats = built(result)
    assert len(data["train"]) == (2 if f0 <= f1 else 1)
    assert stats["tokens"]["total"]["max"] <= f1


def test_math_adapter_and_rating_margin(tmp_path):
    recipe = write_recipe(
        tmp_path,
        f"""
        [stages.all]
        kind = "dataset"
        sources = [{{ adapter = "math", path = "data/{MATH.name}" }}]
        shuffle = false

        [stages.margin]
        kind = "dataset"
        sources = [{{ adapter = "math", path = "data/{MATH.name}", options = {{ min_rating_margin = 2.0 }} }}]
        shuffle = false
        """,
        files=[MATH],
    )
    result = run(recipe)
    source = rows_of(MATH)
    data, stats = built(result, "all")
    assert len(data["train"]) == len(source) == 8
    first = data["train"][0]
    assert first["prompt"] == [{"role": "user", "content": source[0]["instruction"]}]
    assert first["chosen"][0]["content"] == source[0]["chosen_response"]
    assert first["rejected"][0]["content"] == source[0]["rejected_response"]
    data, stats = built(result, "margin")
    expected = [r for r in source if r["chosen_rating"] - r["rejected_rating"] >= 2.0]
    assert [r["prompt"][0]["content"] for r in data["train"]] == [r["instruction"] for r in expected]
    assert stats["sources"][0]["dropped"] == {"rating margin below 2": len(source) - len(expected)}


def test_toxic_csv_parquet_and_saved_dataset_sources(tmp_path):
    import datasets

    toxic = datasets.Dataset.from_list(rows_of(TOXIC))
    (tmp_path / "data").mkdir()
    toxic.to_parquet(str(tmp_path / "data" / "toxic.parquet"))
    toxic.to_csv(str(tmp_path / "data" / "toxic.csv"), index=False)
    datasets.DatasetDict({"train": toxic.select(range(3)), "extra": toxic.select(range(3, 6))}).save_to_disk(
        str(tmp_path / "data" / "saved")
    )
    recipe = write_recipe(
        tmp_path,
        f"""
        [stages.jsonl]
        kind = "dataset"
        sources = [{{ adapter = "toxic", path = "data/{TOXIC.name}" }}]
        shuffle = false
        [stages.parquet]
        kind = "dataset"
        sources = [{{ adapter = "toxic", path = "data/toxic.parquet" }}]
        shuffle = false
        [stages.csv]
        kind = "dataset"
        sources = [{{ adapter = "toxic", path = "data/toxic.csv" }}]
        shuffle = false
        [stages.saved]
        kind = "dataset"
        sources = [{{ adapter = "toxic", path = "data/saved", split = "extra" }}, {{ adapter = "toxic", path = "data/saved" }}]
        shuffle = false
        """,
        files=[TOXIC],
    )
    result = run(recipe)
    reference, _ = built(result, "jsonl")
    assert reference["train"][0]["prompt"] == [{"role": "user", "content": rows_of(TOXIC)[0]["prompt"]}]
    for name in ("parquet", "csv"):
        assert built(result, name)[0]["train"].to_list() == reference["train"].to_list()
    saved, stats = built(result, "saved")
    assert saved["train"].to_list() == reference["train"].to_list()[3:] + reference["train"].to_list()[:3]
    assert [s["rows_in"] for s in stats["sources"]] == [3, 3]


def test_data_dir_and_data_files_choose_files_in_a_directory(tmp_path):
    """As ``datasets.load_dataset`` takes them: a folder (HelpSteer2's ``data_dir = "preference"``), a glob, a
    list, a table of splits; relative to ``data_dir`` when both are set. Both are part of the fingerprint."""
    mixed = tmp_path / "mixed"
    for folder, name, fixture in [("preference", "train.jsonl", ORCA), ("math", "part-a.jsonl", MATH), ("math", "part-b.jsonl", MATH)]:
        (mixed / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(fixture, mixed / folder / name)
    (mixed / "math" / "part-b.jsonl").write_text("".join(MATH.read_text().splitlines(keepends=True)[:3]))
    recipe = write_recipe(tmp_path, """
        [stages.folder]
        kind = "dataset"
        sources = [{ adapter = "orca", path = "mixed", data_dir = "preference" }]
        [stages.glob]
        kind = "dataset"
        sources = [{ adapter = "math", path = "mixed", data_files = "math/*.jsonl" }]
        dedup = false
        [stages.splits]
        kind = "dataset"
        sources = [
          { adapter = "math", path = "mixed", data_dir = "math", data_files = { train = ["part-a.jsonl"], test = "part-b.jsonl" }, split = "test" },
        ]
        """)
    result = run(recipe)
    assert result.ok, result.error
    rows_in = {name: built(result, name)[1]["rows_in"] for name in ("folder", "glob", "splits")}
    assert rows_in == {"folder": 2, "glob": 8 + 3, "splits": 3}

    recipe.write_text(recipe.read_text().replace('data_dir = "preference"', 'data_dir = "./preference"'))
    again = run(recipe)
    assert [again.outcome(name).status for name in ("folder", "glob", "splits")] == ["ran", "cached", "cached"]


def test_columns_adapter_maps_user_columns(tmp_path):
    rows = [
        {"instr": "Pick a number.", "good": "Seven.", "bad": "Banana.", "sys": "Be brief."},
        {"instr": "Name a planet.", "good": "Mars.", "bad": "The Moon.", "sys": ""},
        # already conversational columns are taken as they are
    ]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "own.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe(tmp_path, """
        [stages.data]
        kind = "dataset"
        sources = [{ adapter = "columns", path = "data/own.jsonl", options = { prompt = "instr", chosen = "good", rejected = "bad", system = "sys" } }]
        shuffle = false
        """)
    data, _ = built(run(recipe))
    assert data["train"].to_list() == [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Pick a number."}],
            "chosen": [{"role": "assistant", "content": "Seven."}],
            "rejected": [{"role": "assistant", "content": "Banana."}],
        },
        {
            "prompt": [{"role": "user", "content": "Name a planet."}],
            "chosen": [{"role": "assistant", "content": "Mars."}],
            "rejected": [{"role": "assistant", "content": "The Moon."}],
        },
    ]


def test_messages_adapter_for_sft_layouts(tmp_path, tiny_model):
    recipe = write_recipe(
        tmp_path,
        f"""
        [stages.data]
        kind = "dataset"
        sources = [{{ adapter = "messages", path = "data/{SHAREGPT.name}" }}, {{ adapter = "messages", path = "data/{CHAT.name}" }}]
        tokenizer = "solar"
        shuffle = false
        """,
        tiny_model,
        files=[SHAREGPT, CHAT],
    )
    result = run(recipe)
    data, stats = built(result)
    assert data["train"].column_names == ["messages"]
    rows = data["train"].to_list()
    assert len(rows) == 6 and stats["format"] == "sft"
    assert rows[0]["messages"] == [
        {"role": "system", "content": "You are concise."},
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."},
    ]
    assert [m["role"] for m in rows[1]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert rows[3]["messages"] == rows_of(CHAT)[0]["messages"]
    assert stats["tokens"]["total"]["max"] > 0 and "prompt" not in stats["tokens"]


def test_mixing_dedup_caps_weights_and_seeded_shuffle(tmp_path):
    orca_rows = rows_of(TINY_ORCA)[:20]
    # a near-duplicate of row 0 (case and whitespace differ) in a second source is dropped as a duplicate
    dup = dict(orca_rows[0], question="  " + orca_rows[0]["question"].upper().replace(" ", "   ") + " ")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in orca_rows))
    (tmp_path / "data" / "b.jsonl").write_text(json.dumps(dup) + "\n" + json.dumps(orca_rows[1]) + "\n")
    body = f"""
        [stages.data]
        kind = "dataset"
        sources = [
          {{ adapter = "orca", path = "data/a.jsonl", max_rows = 15 }},
          {{ adapter = "math", path = "data/{MATH.name}", weight = 0.5 }},
          {{ adapter = "toxic", path = "data/{TOXIC.name}", weight = 2.0 }},
          {{ adapter = "orca", path = "data/b.jsonl" }},
        ]
        test_size = 0.2
        seed = SEED
        """
    recipe = write_recipe(tmp_path, body.replace("SEED", "1"), files=[MATH, TOXIC])
    data, stats = built(run(recipe))
    per_source = [(s["rows_in"], s["rows_kept"], s["rows_out"]) for s in stats["sources"]]
    assert per_source == [(20, 20, 15), (8, 8, 4), (6, 6, 12), (2, 0, 0)]
    assert stats["sources"][3]["dropped"] == {"duplicate prompt": 2}
    total = 15 + 4 + 12
    assert stats["rows"] == {"train": total - round(0.2 * total), "test": round(0.2 * total)}
    assert len(data["train"]) + len(data["test"]) == total
    all_rows = data["train"].to_list() + data["test"].to_list()
    prompts = [r["prompt"][-1]["content"] for r in all_rows]
    assert sum(p.startswith("Placeholder request") for p in prompts) == 12  # weight 2: each toxic row twice
    assert len(set(p for p in prompts if not p.startswith("Placeholder"))) == 19  # no other duplicates

    # same seed in a fresh store: identical; another seed: another order
    (tmp_path / "again").mkdir()
    same = write_recipe(tmp_path / "again", body.replace("SEED", "1"), files=[MATH, TOXIC])
    for name in ("a.jsonl", "b.jsonl"):
        shutil.copy(tmp_path / "data" / name, tmp_path / "again" / "data" / name)
    assert built(run(same))[0]["train"].to_list() == data["train"].to_list()
    other = write_recipe(tmp_path / "again", body.replace("SEED", "2"))
    assert built(run(other))[0]["train"].to_list() != data["train"].to_list()


def test_hub_source_is_recognised_and_fingerprinted_by_revision(tmp_path):
    from sakura_core.plugins import Plugins
    from sakura_data.options import DatasetOptions
    from sakura_core.stage import CheckEnv
    from sakura_data.stage import DatasetStage, locate

    stage = DatasetStage()
    options = DatasetOptions(sources=[{"adapter": "orca", "path": "Intel/orca_dpo_pairs", "revision": "a" * 40}])
    assert locate(options.sources[0], tmp_path) == ("hub", None)
    env = CheckEnv(plugins=Plugins(), recipe_dir=tmp_path, names=set())
    assert stage.external_inputs(options, env) == {
        "sources[0]": {"hub": "Intel/orca_dpo_pairs", "revision": "a" * 40}
    }
    assert stage.uses(options) == [("dataset_adapters", "orca")]


def test_a_new_adapter_is_one_small_plugin(tmp_path):
    """A recipe-local plugin file registers an adapter; editing the plugin re-runs the stage."""
    plugin = tmp_path / "qa_adapter.py"
    plugin.write_text(textwrap.dedent('''
        from sakura_core import hookimpl
        from sakura_core.options import Options
        from sakura_data import Adapter, Skip, preference

        class QAOptions(Options):
            prefix: str = ""

        class QAAdapter(Adapter):
            columns = ("q", "good", "bad")
            Options = QAOptions

            def run(self, row, options):
                if row["q"].startswith("#"):
                    raise Skip("commented out")
                return preference(options.prefix + row["q"], row["good"], row["bad"])

        @hookimpl
        def sakura_register_dataset_adapters(register):
            register("qa", QAAdapter())
        '''))
    (tmp_path / "data").mkdir()
    rows = [{"q": "Two plus two?", "good": "Four.", "bad": "Five."}, {"q": "# skip me", "good": "x", "bad": "y"}]
    (tmp_path / "data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""
        name = "t"
        plugins = ["qa_adapter.py"]
        [stages.data]
        kind = "dataset"
        sources = [{ adapter = "qa", path = "data/qa.jsonl", options = { prefix = "Q: " } }]
        """))
    result = run(recipe)
    data, stats = built(result)
    assert data["train"].to_list() == [
        {
            "prompt": [{"role": "user", "content": "Q: Two plus two?"}],
            "chosen": [{"role": "assistant", "content": "Four."}],
            "rejected": [{"role": "assistant", "content": "Five."}],
        }
    ]
    assert stats["dropped"] == {"commented out": 1}
    assert run(recipe).outcome("data").status == "cached"
    plugin.write_text(plugin.read_text().replace('"commented out"', '"comment"'))
    assert run(recipe).outcome("data").status == "ran"


def test_orca_system_column_can_be_left_out(tmp_path):
    """``system = false``: the prompt is the question alone, as in the Sakura-SOLAR runs."""
    recipe = write_recipe(
        tmp_path,
        """
        [stages.data]
        kind = "dataset"
        sources = [{ adapter = "orca", path = "data/tiny_orca.jsonl", options = { system = false } }]
        """,
        files=[TINY_ORCA],
    )
    data, _ = built(run(recipe))
    assert any(r["system"] for r in rows_of(TINY_ORCA))
    assert all([m["role"] for m in row["prompt"]] == ["user"] for row in data["train"])


def test_a_weighted_source_left_empty_by_dedup_adds_nothing(tmp_path):
    shutil.copy(TOXIC, tmp_path / "copy.jsonl")
    recipe = write_recipe(
        tmp_path,
        f"""
        [stages.data]
        kind = "dataset"
        sources = [
          {{ adapter = "toxic", path = "data/{TOXIC.name}" }},
          {{ adapter = "toxic", path = "copy.jsonl", weight = 2.0 }},
        ]
        """,
        files=[TOXIC],
    )
    data, stats = built(run(recipe))
    assert len(data["train"]) == len(rows_of(TOXIC))
    assert [s["rows_out"] for s in stats["sources"]] == [len(rows_of(TOXIC)), 0]

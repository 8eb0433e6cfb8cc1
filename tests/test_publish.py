"""The ``publish`` stage kind, the ``local`` publisher and the model card, run through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sakura_core.engine import Engine
from sakura_core.errors import RecipeError
from sakura_core.recipe import load_recipe

RECIPE = """\
name = "tiny-publish"
[models]
base = "tiny:llama?seed=3"
[stages.publish]
kind = "publish"
publisher = "local"
model = "base"
{extra}
"""


def write_recipe(tmp_path: Path, extra: str = 'path = "dist/tiny"') -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE.format(extra=extra))
    return path


def run(recipe: Path):
    result = Engine(load_recipe(recipe)).run()
    return result


def test_local_publish_copies_a_loadable_model_with_card_and_lineage(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = write_recipe(tmp_path, 'path = "dist/tiny"\nlicense = "apache-2.0"\ntags = ["demo"]')
    stale = tmp_path / "dist" / ".tiny.sakura-tmp-999999999"  # left by a publish killed midway
    stale.mkdir(parents=True)
    result = run(recipe)
    assert result.ok, result.error
    assert not stale.exists()
    outcome = result.outcome("publish")
    target = tmp_path / "dist" / "tiny"
    record = json.loads((outcome.artifact / "published.json").read_text())
    assert record["path"] == str(target) and record["publisher"] == "local"
    assert outcome.metrics["path"] == str(target)

    names = sorted(p.name for p in target.iterdir())
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    assert "sakura-artifact.json" not in names
    assert {"README.md", "sakura-lineage.json", "sakura-recipe.toml"} <= set(names)
    assert not [p for p in tmp_path.joinpath("dist").iterdir() if p.name.startswith(".")], "temporary folder left"

    card = (target / "README.md").read_text()
    front = _front_matter(card)
    assert front["license"] == "apache-2.0" and front["library_name"] == "transformers"
    assert front["tags"] == ["sakura", "demo"]
    assert "## Recipe" in card and 'model = "base"' in card and "## How to load" in card
    lineage = json.loads((target / "sakura-lineage.json").read_text())
    assert lineage["format"] == "sakura-lineage/1"
    assert lineage["lineage"][0]["source"] == "tiny" and lineage["model"]["name"] == "base"
    assert lineage["files"]["model.safetensors"]["size"] == (target / "model.safetensors").stat().st_size
    assert (target / "sakura-recipe.toml").read_text() == recipe.read_text()

    source = result.plan.sources["base"]
    source_dir = Engine(load_recipe(recipe)).store.artifact_path(source.fingerprint)
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(source_dir)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(target)(ids).logits
    assert torch.equal(want, got)
    tokenizer = AutoTokenizer.from_pretrained(target)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "### User:\nhi\n\n### Assistant:\n"

    # Unchanged: cached, the folder untouched; a forced re-run replaces it whole.
    before = (target / "model.safetensors").stat().st_mtime_ns
    again = run(recipe)
    assert again.outcome("publish").status == "cached"
    assert (target / "model.safetensors").stat().st_mtime_ns == before
    forced = Engine(load_recipe(recipe)).run(force=["publish"])
    assert forced.ok and sorted(p.name for p in target.iterdir()) == names


def test_local_publish_refuses_a_foreign_folder_and_leaves_it_alone(tmp_path):
    target = tmp_path / "dist" / "tiny"
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    result = run(write_recipe(tmp_path))
    assert not result.ok
    message = str(result.error)
    assert "\n" not in message and "non-empty folder that sakura did not write" in message
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert [p.name for p in target.parent.iterdir()] == ["tiny"]
    store = Engine(load_recipe(write_recipe(tmp_path))).store
    assert all(a.manifest.get("kind") != "publish" for a in store.list())


@pytest.mark.parametrize(
    "extra, key, words",
    [
        ('pth = "dist/x"', "stages.publish.pth", "unknown option for publisher 'local' (did you mean path?)"),
        ('path = "d"\nlicence = "mit"', "stages.publish.licence", "(did you mean license?)"),
        ("", "stages.publish.path", "missing required option"),
        ('path = 3', "stages.publish.path", "valid string"),
    ],
)
def test_publisher_options_are_validated_by_the_publisher(tmp_path, extra, key, words):
    with pytest.raises(RecipeError) as info:
        load_recipe(write_recipe(tmp_path, extra))
    message = str(info.value)
    assert message.startswith(f"recipe.toml: {key}: ") and words in message


def test_unknown_publisher_suggests_the_closest(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(extra='path = "d"').replace('publisher = "local"', 'publisher = "locl"'))
    with pytest.raises(RecipeError, match=r"stages\.publish\.publisher: unknown publisher 'locl' \(did you mean local\?\)"):
        load_recipe(recipe)


def _front_matter(card: str) -> dict:
    import yaml

    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_card_tells_the_whole_lineage():
    from sakura_publish.card import render_card

    lineage = [
        {"name": "solar", "kind": "model", "source": "hub", "id": "upstage/SOLAR-10.7B-Instruct-v1.0",
         "revision": "main", "sha": "a" * 40, "license": "cc-by-nc-4.0", "fingerprint": "f1"},
        {"name": "sauerkraut", "kind": "model", "source": "hub", "id": "VAGOsolutions/SauerkrautLM-SOLAR-Instruct",
         "revision": "main", "sha": "b" * 40, "license": "cc-by-nc-4.0", "fingerprint": "f2"},
        {"name": "merge", "kind": "merge", "fingerprint": "f3", "metrics": {"seconds_per_tensor": 0.5},
         "options": {"merge_method": "slerp", "base_model": "solar",
                     "slices": [{"sources": [{"model": "sauerkraut", "layer_range": [0, 48]},
                                             {"model": "solar", "layer_range": [0, 48]}]}],
                     "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]}, {"value": 0.5}]},
                     "dtype": "float16"}},
        {"name": "data", "kind": "dataset", "fingerprint": "f4", "metrics": {"rows_train": 15177, "rows_test": 100},
         "options": {"sources": [{"adapter": "orca", "path": "Intel/orca_dpo_pairs"},
                                 {"adapter": "math", "path": "data/math.jsonl"},
                                 {"adapter": "rated_pairs", "path": "data/rated.jsonl"}]}},
        {"name": "dpo", "kind": "train", "fingerprint": "f5", "metrics": {"train_loss": 0.6931, "rewards_accuracy": 0.75},
         "options": {"trainer": "dpo", "model": "merge", "dataset": "data",
                     "lora": {"r": 16, "alpha": 16}, "args": {"learning_rate": 5e-7, "beta": 0.1}}},
    ]
    evaluations = [{"name": "openllm", "kind": "eval", "fingerprint": "f6", "metrics": {
        "evaluator": "lm-eval", "results": {"gsm8k": {"exact_match,strict-match": 0.6391, "exact_match,strict-match_stderr": 0.013}},
        "tasks": {"gsm8k": {"name": "GSM8k (5-shot)", "dataset": "gsm8k", "config": "main", "split": "test", "num_fewshot": 5}}}}]
    card = render_card(lineage, model_name="Sakura-SOLRCA", load_reference="me/Sakura-SOLRCA", evaluations=evaluations,
                       recipe_name="Sakura-SOLRCA", recipe_file="solrca.toml", recipe_text='name = "x"\n',
                       fingerprint="f5",
                       dataset_stats={"f4": {"rows": {"train": 15177, "test": 100}, "sources": [
                           {"rows_in": 12859, "rows_out": 12859, "dropped": {}},
                           {"rows_in": 2418, "rows_out": 2400, "dropped": {"prompt over max_prompt_length": 18}},
                           {"rows_in": 100, "rows_made": 240, "rows_out": 230, "dropped": {"duplicate prompt": 10}}]}})
    front = _front_matter(card)
    assert front["base_model"] == ["upstage/SOLAR-10.7B-Instruct-v1.0", "VAGOsolutions/SauerkrautLM-SOLAR-Instruct"]
    assert front["datasets"] == ["Intel/orca_dpo_pairs"]
    assert front["license"] == "cc-by-nc-4.0"
    assert {"sakura", "merge", "mergekit", "slerp", "dpo", "trl", "lora"} <= set(front["tags"])
    result = front["model-index"][0]["results"][0]
    assert front["model-index"][0]["name"] == "Sakura-SOLRCA"
    assert result["dataset"] == {"name": "GSM8k (5-shot)", "type": "gsm8k", "config": "main", "split": "test",
                                 "args": {"num_few_shot": 5}}
    assert result["metrics"] == [{"type": "exact_match", "value": 0.6391, "name": "exact_match,strict-match"}]
    body = card.split("---\n", 2)[2]
    assert "Merge method: **slerp**" in body and "layer_range" in body and "filter: self_attn" in body
    assert "12,859 of 12,859 rows used" in body and "2,400 of 2,418 rows used (dropped: 18 prompt over max_prompt_length)" in body
    # an adapter that made several rows per source row: rows used of the rows it made
    assert "230 of 240 rows used, made from 100 rows read (dropped: 10 duplicate prompt)" in body
    assert "Rows: train 15,177, test 100." in body
    assert "| learning_rate | 5e-07 |" in body and "| rewards_accuracy | 0.75 |" in body
    assert "| gsm8k | exact_match,strict-match | 0.6391 | 0.013 | 5 |" in body
    assert f"commit `{'a' * 40}`" in body
    assert "from_pretrained('me/Sakura-SOLRCA')" in body


def test_card_shows_the_configuration_trl_received_and_what_the_recipe_set():
    from sakura_publish.card import render_card

    # A DPO stage whose recipe asked for paged_adamw_32bit and gradient_checkpointing, run on a CPU.
    args = {"learning_rate": 5e-7, "optim": "paged_adamw_32bit", "gradient_checkpointing": True}
    metrics = {"loss": 0.69, "trainer_config": {"activation_checkpointing": True, "learning_rate": 5e-7,
                                                "logging_steps": 1, "optim": "adamw_torch", "use_cpu": True},
               "trainer_config_recipe": {"learning_rate": 5e-7, "optim": "paged_adamw_32bit",
                                         "activation_checkpointing": True}}
    lineage = [{"name": "base", "kind": "model", "source": "tiny", "tiny": {"layers": 2}, "fingerprint": "f1"},
               {"name": "dpo", "kind": "train", "fingerprint": "f2", "metrics": metrics,
                "options": {"trainer": "dpo", "model": "base", "dataset": "data", "args": args}}]
    card = render_card(lineage, model_name="m", load_reference="./m", recipe_name="r", recipe_file="r.toml",
                       recipe_text='name = "r"\n', fingerprint="f2")
    assert '| optim | "adamw_torch" | recipe said "paged_adamw_32bit" |' in card
    assert "| activation_checkpointing | true | recipe |" in card and "| learning_rate | 5e-07 | recipe |" in card
    assert "| logging_steps | 1 | default |" in card and "| use_cpu | true | default |" in card
    assert "gradient_checkpointing" not in card.split("## Recipe")[0]  # the name trl did not get

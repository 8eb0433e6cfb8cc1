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


# -- the model tree and valid front matter --------------------------------------------------------------
SOLAR, SAUERKRAUT = "upstage/SOLAR-10.7B-Instruct-v1.0", "VAGOsolutions/SauerkrautLM-SOLAR-Instruct"
ORCA_COMMIT = "d" * 40


def family_lineage() -> list[dict]:
    """The lineage of a Sakura-SOLAR DPO model as the engine records it: each stage names its inputs by
    fingerprint, and the dataset stage the Hub commit it read."""
    return [
        {"name": "solar", "kind": "model", "source": "hub", "id": SOLAR, "sha": "a" * 40, "fingerprint": "f1"},
        {"name": "sauerkraut", "kind": "model", "source": "hub", "id": SAUERKRAUT, "sha": "b" * 40, "fingerprint": "f2"},
        {"name": "merge", "kind": "merge", "produces": "model", "fingerprint": "f3", "inputs": {"solar": "f1", "sauerkraut": "f2"},
         "options": {"merge_method": "slerp", "base_model": "solar",
                     "slices": [{"sources": [{"model": "sauerkraut", "layer_range": [0, 48]},
                                             {"model": "solar", "layer_range": [0, 48]}]}]}},
        {"name": "data", "kind": "dataset", "produces": "dataset", "fingerprint": "f4", "inputs": {"tokenizer": "f3"},
         "external": {"sources[0]": {"hub": "Intel/orca_dpo_pairs", "revision": ORCA_COMMIT}},
         "options": {"sources": [{"adapter": "orca", "path": "Intel/orca_dpo_pairs"}]}},
        {"name": "dpo", "kind": "train", "produces": "model", "fingerprint": "f5", "inputs": {"model": "f3", "dataset": "f4"},
         "options": {"trainer": "dpo", "model": "merge", "dataset": "data", "lora": {"r": 16}}},
    ]


OPENLLM = {"name": "openllm", "kind": "eval", "fingerprint": "f6", "metrics": {
    "evaluator": "lm-eval", "results": {"arc_challenge": {"acc_norm,none": 0.7099, "acc_norm,none_stderr": 0.013}},
    "tasks": {"arc_challenge": {"name": "ARC (25-shot)", "dataset": "allenai/ai2_arc", "config": "ARC-Challenge",
                                "split": "test", "num_fewshot": 25}}}}


def card_of(lineage: list[dict], fingerprint: str, **extra) -> str:
    from sakura_publish.card import render_card

    return render_card(lineage, model_name="m", load_reference="me/m", recipe_name="m", recipe_file="m.toml",
                       recipe_text='name = "m"\n', fingerprint=fingerprint, **extra)


def valid_front_matter(card: str):
    """The card's front matter as huggingface_hub reads it, held to the Hub's rules for the keys sakura writes:
    ``base_model`` and ``datasets`` are Hub ids, ``base_model_relation`` one of the Hub's four, the
    ``model-index`` parses into eval results."""
    from huggingface_hub import ModelCard
    from huggingface_hub.utils import validate_repo_id

    data = ModelCard(card).data  # ModelCardData: raises on a model-index it cannot read
    bases = data.base_model if isinstance(data.base_model, list) else [data.base_model] if data.base_model else []
    for repo_id in [*bases, *(data.datasets or [])]:
        validate_repo_id(repo_id)
    assert data.to_dict().get("base_model_relation") in (None, "adapter", "merge", "quantized", "finetune")
    assert not data.to_dict().get("base_model_relation") or bases
    if "model-index" in card.split("---\n", 2)[1]:
        assert data.eval_results and all(r.metric_value is not None for r in data.eval_results)
    return data.to_dict()


def test_card_of_a_merge_names_what_it_merged():
    front = valid_front_matter(card_of(family_lineage()[:3], "f3"))
    assert front["base_model"] == [SOLAR, SAUERKRAUT] and front["base_model_relation"] == "merge"


def test_card_of_a_finetune_of_a_published_merge_names_the_merge_repo():
    published = {"f3": {"repo_id": "me/Sakura-SOLAR-Instruct", "commit": "c" * 40, "url": "x"}}
    card = card_of(family_lineage(), "f5", published=published)
    front = valid_front_matter(card)
    assert front["base_model"] == "me/Sakura-SOLAR-Instruct" and front["base_model_relation"] == "finetune"
    assert front["datasets"] == ["Intel/orca_dpo_pairs"]
    tree = card.split("## Model tree")[1].split("\n## ")[0]
    assert "`base_model` names [me/Sakura-SOLAR-Instruct](https://huggingface.co/me/Sakura-SOLAR-Instruct) (`base_model_relation: finetune`)" in tree
    assert ("1. stage `dpo`: fine-tuned [me/Sakura-SOLAR-Instruct](https://huggingface.co/me/Sakura-SOLAR-Instruct) "
            f"(stage `merge`, commit `{'c' * 40}`) with **dpo**") in tree and "not published" not in tree
    assert f"[Intel/orca_dpo_pairs](https://huggingface.co/datasets/Intel/orca_dpo_pairs) at commit `{ORCA_COMMIT}`" in card


def test_card_of_a_finetune_of_an_unpublished_merge_says_what_happened():
    card = card_of(family_lineage(), "f5")
    front = valid_front_matter(card)
    # the Hub has no id for the merge: the merged models, as the Hub's docs write a merge
    assert front["base_model"] == [SOLAR, SAUERKRAUT] and front["base_model_relation"] == "merge"
    tree = card.split("## Model tree")[1].split("\n## ")[0]
    assert f"1. stage `merge`: merged [{SOLAR}](https://huggingface.co/{SOLAR}) (commit `{'a' * 40}`) and " in tree
    assert "with **slerp**." in tree and "2. stage `dpo`: fine-tuned stage `merge` with **dpo** on the data of stage `data`." in tree
    assert "Stage `merge` was not published on its own" in tree


def test_card_with_eval_results_has_a_valid_model_index():
    front = valid_front_matter(card_of(family_lineage()[:3], "f3", evaluations=[OPENLLM]))
    result = front["model-index"][0]["results"][0]
    assert result["dataset"]["type"] == "allenai/ai2_arc" and result["metrics"][0]["value"] == 0.7099


def test_a_stage_published_with_other_bytes_is_not_named():
    """A forced rebuild can put other bytes under the published stage's fingerprint: the repo holds the old ones."""
    from sakura_core.store import Store
    from sakura_publish.stage import published_parents

    class Hub:
        def hub_id(self, record):
            return record["repo_id"]

    store = Store(Path(__import__("tempfile").mkdtemp()))
    lineage = family_lineage()
    lineage[2]["digest"] = "now"
    store.record_publication("f3", "hub:x@main", {"publisher": "hub", "repo_id": "me/merge", "digest": "before"})
    assert published_parents(lineage, "f5", store, {"hub": Hub()}) == {}
    store.record_publication("f3", "hub:y@main", {"publisher": "hub", "repo_id": "me/merge2", "digest": "now", "commit": "c"})
    assert published_parents(lineage, "f5", store, {"hub": Hub()}) == {"f3": {"repo_id": "me/merge2", "commit": "c", "url": None}}


def test_an_adapter_published_alone_names_the_model_it_applies_to(tmp_path):
    """adapter = true: the train stage's adapter/, a card with base_model_relation adapter (peft), and an
    adapter_config.json that points to the base on the Hub instead of the store path it was trained on."""
    from sakura_core.errors import StageError
    from sakura_publish.stage import build_bundle

    adapter = tmp_path / "dpo" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/store/artifacts/f3", "r": 16}))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    published = {"f3": {"repo_id": "me/Sakura-SOLAR-Instruct", "commit": "c" * 40, "url": "x"}}

    def bundle(parents):
        return build_bundle(model_dir=adapter, model_name="dpo", model_fingerprint="f5", lineage=family_lineage(),
                            recipe_name="m", recipe_file="m.toml", recipe_text='name = "m"\n', out_dir=tmp_path / "out",
                            load_reference="me/m-adapter", published=parents, adapter=True)

    made = bundle(published)
    assert sorted(made.files) == ["README.md", "adapter_config.json", "adapter_model.safetensors", "sakura-lineage.json",
                                  "sakura-recipe.toml"]
    assert json.loads(made.files["adapter_config.json"].read_text()) == {"base_model_name_or_path": "me/Sakura-SOLAR-Instruct", "r": 16}
    card = made.files["README.md"].read_text()
    front = valid_front_matter(card)
    assert (front["base_model"], front["base_model_relation"], front["library_name"]) == ("me/Sakura-SOLAR-Instruct", "adapter", "peft")
    assert "(this repository holds the adapter alone)" in card
    with pytest.raises(StageError, match=r"^the adapter of dpo applies to a model that is not on the Hub: publish that model first"):
        bundle({})

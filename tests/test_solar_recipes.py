"""The Sakura-SOLAR recipe family runs exactly as written, against stand-ins on the loopback Hub.

Stand-in models and datasets are uploaded under the real Hub names. The models keep the real layer counts
and architecture families (SOLAR: 48-layer Llama with grouped-query attention, Mistral-7B: 32-layer
Mistral) and shrink only widths and vocabulary, so layer gradients and depth up-scaling mean what they
mean on the real models. The recipe files are run unchanged; only HF_ENDPOINT and the store location
(SAKURA_STORE, so nothing is written into the repository) come from the environment.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from hub_fixtures import REPO_ROOT, hub  # noqa: F401 - fixture

RECIPES = REPO_ROOT / "recipes"
FAMILY = ["sakura_solar_instruct", "sakura_solar_dpo_v1", "sakura_solar_dpo_v2", "solrca", "solrca_math_v1", "solrca_math", "dus_solar"]
# (repo id, stand-in shape): SOLAR's 32 heads / 8 KV heads become 8 / 2, its width 4096 becomes 64.
STAND_INS = {
    "upstage/SOLAR-10.7B-Instruct-v1.0": dict(arch="llama", layers=48, heads=8, kv_heads=2, seed=1),
    "VAGOsolutions/SauerkrautLM-SOLAR-Instruct": dict(arch="llama", layers=48, heads=8, kv_heads=2, seed=2),
    "mistralai/Mistral-7B-v0.1": dict(arch="mistral", layers=32, heads=8, kv_heads=2, seed=3),
}
ORCA_ROWS = 20
MATH_ROWS = 20


def upload_model(hub, repo_id: str, shape: dict, where: Path) -> None:
    from sakura_models.tiny import TinyOptions, generate_tiny_model

    out = where / repo_id.replace("/", "--")
    generate_tiny_model(TinyOptions(hidden=64, intermediate=128, vocab=512, **shape), out)
    hub.seed_repo(repo_id, {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()})


def orca_rows(n: int) -> bytes:
    """Intel/orca_dpo_pairs' schema and file (orca_rlhf.jsonl); ``rejected`` starts with a space, as there."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        rows.append({
            "system": "You are an AI assistant. Think step by step." if i % 2 else "",
            "question": f"Question {i}: what is {a} plus {b}? Explain briefly.",
            "chosen": f"{a} plus {b} is {a + b}: adding the tens and then the ones gives {a + b}.",
            "rejected": f" The answer is {a + b + rng.randint(1, 9)}.",
        })
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def math_rows(n: int) -> bytes:
    """argilla/distilabel-math-preference-dpo's schema, as the parquet file of its train split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(1)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        rows.append({
            "metadata": json.dumps({"length-input": 30, "rating-generations-1": 9.0, "rating-generations-2": 4.0}),
            "instruction": f"Problem {i}: what is {a} times {b}?",
            "chosen_response": f"{a} times {b} is {a * b}.",
            "chosen_rating": 9.0,
            "rejected_response": f"{a} times {b} is {a * b + 1}.",
            "rejected_rating": 4.0,
        })
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


@pytest.fixture
def solar_hub(hub, tmp_path):  # noqa: F811 - the fixture of the same name
    for repo_id, shape in STAND_INS.items():
        upload_model(hub, repo_id, shape, tmp_path / "stand-ins")
    hub.seed_repo("Intel/orca_dpo_pairs", {"orca_rlhf.jsonl": orca_rows(ORCA_ROWS)}, repo_type="dataset")
    hub.seed_repo(
        "argilla/distilabel-math-preference-dpo",
        {"data/train-00000-of-00001.parquet": math_rows(MATH_ROWS)},
        repo_type="dataset",
    )
    return hub


def run(hub, store: Path, *args: str) -> dict:
    return hub.run_json(*args, SAKURA_STORE=str(store))


# The Open LLM Leaderboard's datasets are not on the loopback Hub: the recipes' openllm evals run the demo's
# local multiple-choice task instead (recipes/tasks), on 8 of its questions.
LOCAL_EVAL = '{ tasks = ["sakura_trivia"], task_files = ["tasks/sakura_trivia.yaml"], limit = 8 }'


def local_evals(*stages: str) -> list[str]:
    return [part for stage in stages for part in ("-s", f"stages.{stage}.options={LOCAL_EVAL}")]


def statuses(out: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in out["stages"]}


def test_every_recipe_of_the_family_validates():
    from sakura_core.recipe import load_recipe

    for stem in FAMILY:
        recipe = load_recipe(RECIPES / f"{stem}.toml")
        assert recipe.stages["publish"].options.publisher == "hub"


# sakura_family.toml's variants and the single-model recipes they stand for
FAMILY_FILE = {"SOLAR-Instruct-DPO-v1": "sakura_solar_dpo_v1", "SOLAR-Instruct-DPO-v2": "sakura_solar_dpo_v2",
               "SOLRCA-Instruct-DPO": "solrca", "SOLRCA-Math-Instruct-DPO-v1": "solrca_math_v1",
               "SOLRCA-Math-Instruct-DPO-v2": "solrca_math"}


def test_the_family_file_declares_exactly_the_single_model_recipes():
    """Every variant of sakura_family.toml is its single-model recipe: the same name, models and stages with the
    same validated options (so the same fingerprints: the two share the store's artifacts)."""
    from sakura_core.recipe import load_family, load_recipe

    family = load_family(RECIPES / "sakura_family.toml")
    assert list(family.variants) == list(FAMILY_FILE)
    for variant, stem in FAMILY_FILE.items():
        member, single = family.variants[variant], load_recipe(RECIPES / f"{stem}.toml")
        assert member.name == single.name == f"Sakura-{variant}"
        assert {a: (m.source_name, m.options) for a, m in member.models.items()} == \
               {a: (m.source_name, m.options) for a, m in single.models.items()}
        assert list(member.stages) == list(single.stages), variant
        for name, stage in member.stages.items():
            assert stage.options == single.stages[name].options, (variant, name)


CHECK_CARD = r"""
import json, sys
from huggingface_hub import ModelCard
card = ModelCard.load(sys.argv[1])
card.validate()  # the Hub's check, here the loopback server's
print(json.dumps(card.data.to_dict()))
"""


def published_card(hub, repo_id: str) -> dict:
    """The repo's model card loaded and validated by huggingface_hub, as its front matter."""
    done = hub.python("-c", CHECK_CARD, repo_id)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_family_runs_as_written_and_the_hub_tree_reads_parents_merge_dpo(solar_hub, tmp_path):
    hub, store = solar_hub, tmp_path / "store"
    assert "solrca_math" in FAMILY and (RECIPES / "solrca_math.toml").read_text().count("127.0.0.1") == 0
    solar_sha, sauerkraut_sha = (hub.state.repos[("model", r)].refs["main"] for r in list(STAND_INS)[:2])

    # The merge, published on its own: a merge of the two SOLAR models.
    out = run(hub, store, "run", "recipes/sakura_solar_instruct.toml", *local_evals("openllm"))
    assert statuses(out) == {"merge": "ran", "openllm": "ran", "publish": "ran"}
    merge_repo = hub.files("tester/Sakura-SOLAR-Instruct")
    front = published_card(hub, "tester/Sakura-SOLAR-Instruct")
    assert sorted(front["base_model"]) == ["VAGOsolutions/SauerkrautLM-SOLAR-Instruct", "upstage/SOLAR-10.7B-Instruct-v1.0"]
    assert front["base_model_relation"] == "merge" and front["model-index"]
    import yaml

    mergekit = yaml.safe_load(merge_repo["mergekit_config.yml"])  # runnable as written: models at their commits
    assert mergekit["base_model"] == f"upstage/SOLAR-10.7B-Instruct-v1.0@{solar_sha}"
    assert {s["model"] for s in mergekit["slices"][0]["sources"]} == {
        f"upstage/SOLAR-10.7B-Instruct-v1.0@{solar_sha}", f"VAGOsolutions/SauerkrautLM-SOLAR-Instruct@{sauerkraut_sha}"}

    # DPO on that merge: the merge is not made again, and the card names the published merge as its parent.
    out = run(hub, store, "run", "recipes/solrca_math.toml", *local_evals("openllm_merge", "openllm"))
    assert statuses(out) == {"merge": "cached", "data": "ran", "dpo": "ran", "openllm_merge": "cached", "openllm": "ran",
                             "publish": "ran"}
    stages = {s["name"]: s for s in out["stages"]}
    front = published_card(hub, "tester/Sakura-SOLRCA-Math-Instruct-DPO-v2")
    assert front["base_model"] == "tester/Sakura-SOLAR-Instruct" and front["base_model_relation"] == "finetune"
    assert front["datasets"] == ["Intel/orca_dpo_pairs", "argilla/distilabel-math-preference-dpo"]

    merged = json.loads((Path(stages["merge"]["artifact"]) / "config.json").read_text())
    assert merged["num_hidden_layers"] == 48 and merged["architectures"] == ["LlamaForCausalLM"]

    stats = json.loads((Path(stages["data"]["artifact"]) / "stats.json").read_text())
    assert [s["source"] for s in stats["sources"]] == ["Intel/orca_dpo_pairs", "argilla/distilabel-math-preference-dpo"]
    assert stages["data"]["metrics"]["rows_train"] == ORCA_ROWS + MATH_ROWS

    adapter = json.loads((Path(stages["dpo"]["artifact"]) / "adapter" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"}
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (16, 16, 0.05)
    from safetensors.torch import load_file

    weights = load_file(Path(stages["dpo"]["artifact"]) / "adapter" / "adapter_model.safetensors")
    head_b = [w for name, w in weights.items() if "lm_head" in name and "lora_B" in name]
    assert head_b and head_b[0].abs().sum() > 0  # LoRA B starts at zero: the head's adapter was trained
    dpo = stages["dpo"]["metrics"]
    assert dpo["steps"] == 2  # 40 pairs at an effective batch of 32 (2 x 16), one epoch

    published = hub.files("tester/Sakura-SOLRCA-Math-Instruct-DPO-v2")
    assert {"config.json", "README.md", "sakura-lineage.json", "trainer_config.json"} <= set(published)
    # the merge's float16, though a CPU trains in float32: the published model is the size of the merge
    assert json.loads(published["config.json"])["dtype"] == "float16"
    shards = [data for name, data in published.items() if name.endswith(".safetensors")]
    assert shards and sum(map(len, shards)) <= 1.01 * sum(len(d) for n, d in merge_repo.items() if n.endswith(".safetensors"))
    lineage = json.loads(published["sakura-lineage.json"])
    assert [(d["id"], d["commit"]) for d in lineage["hub_datasets"]] == [
        (name, hub.state.repos[("dataset", name)].refs["main"]) for name in ("Intel/orca_dpo_pairs", "argilla/distilabel-math-preference-dpo")]
    assert [(m["id"], m["commit"]) for m in lineage["hub_models"]] == [
        ("upstage/SOLAR-10.7B-Instruct-v1.0", solar_sha), ("VAGOsolutions/SauerkrautLM-SOLAR-Instruct", sauerkraut_sha)]
    assert lineage["published_stages"]["merge"]["repo_id"] == "tester/Sakura-SOLAR-Instruct"
    # the recipe as it ran: the eval overrides of this test are in it
    assert "sakura_trivia" in published["sakura-recipe.toml"].decode()
    card = published["README.md"].decode()
    assert "upstage/SOLAR-10.7B-Instruct-v1.0" in card and "Intel/orca_dpo_pairs" in card and "sakura_trivia" in card.split("## Recipe")[1]
    orca = hub.state.repos[("dataset", "Intel/orca_dpo_pairs")].refs["main"]
    assert f"[Intel/orca_dpo_pairs](https://huggingface.co/datasets/Intel/orca_dpo_pairs) at commit `{orca}`" in card
    # The card shows the configuration trl received: on a CPU the recipe's paged optimizer ran as adamw_torch.
    ran = dpo["trainer_config"]["optim"]
    assert (Path(stages["dpo"]["artifact"]) / "trainer_config.json").is_file()
    assert f'| optim | "{ran}" | ' in card and "| activation_checkpointing | true | recipe |" in card
    if dpo["trainer_config"].get("use_cpu"):
        assert ran == "adamw_torch" and '| optim | "adamw_torch" | recipe said "paged_adamw_32bit" |' in card
    # The card carries the DPO model's evaluation (not the merge's), with the Hub's model-index.
    assert "## Evaluation (stage `openllm`, lm-eval)" in card and "`openllm_merge`" not in card
    assert front["model-index"][0]["results"][0]["dataset"]["type"] == "sakura_trivia"

    # Offline after the online runs, every Hub input resolves to the commit in the Hugging Face cache.
    done = hub.run("plan", "recipes/solrca_math.toml", *local_evals("openllm_merge", "openllm"), "--json",
                   SAKURA_STORE=str(store), offline=True)
    assert done.returncode == 0, done.stderr
    offline = {s["stage"]: (s["status"], s["notes"]) for s in json.loads(done.stdout)["stages"]}
    assert {name: status for name, (status, _) in offline.items()} == dict.fromkeys(
        ["merge", "data", "dpo", "openllm_merge", "openllm", "publish"], "cached"), offline

    # v1 differs only in its LoRA targets: the merge, the data and the reference log-probs are shared.
    out = run(hub, store, "run", "recipes/solrca_math_v1.toml", *local_evals("openllm_merge", "openllm"))
    assert statuses(out) == {"merge": "cached", "data": "cached", "dpo": "ran", "openllm_merge": "cached", "openllm": "ran",
                             "publish": "ran"}
    assert {s["name"]: s for s in out["stages"]}["dpo"]["metrics"]["ref_cache_hit"] is True
    assert published_card(hub, "tester/Sakura-SOLRCA-Math-Instruct-DPO-v1")["base_model"] == "tester/Sakura-SOLAR-Instruct"

    # The other variants: the merge is already there; only their own data and training would run.
    for stem in ("sakura_solar_dpo_v1", "sakura_solar_dpo_v2", "solrca"):
        plan = run(hub, store, "plan", f"recipes/{stem}.toml")
        assert {s["stage"]: s["status"] for s in plan["stages"]}["merge"] == "cached", stem

    # The family file: what its single-model recipes ran is cached, the rest is planned with shared stages once.
    plan = run(hub, store, "plan", "recipes/sakura_family.toml", *local_evals("openllm_merge", "openllm"))
    grid = plan["grid"]
    assert {grid["merge"][v]["status"] for v in FAMILY_FILE} == {"cached"}
    assert grid["dpo"]["SOLRCA-Math-Instruct-DPO-v2"]["status"] == grid["dpo"]["SOLRCA-Math-Instruct-DPO-v1"]["status"] == "cached"
    assert grid["data"]["SOLAR-Instruct-DPO-v1"]["shared_with"] == 2 and grid["data"]["SOLAR-Instruct-DPO-v1"]["status"] == "will run"


def test_dus_solar_up_scales_mistral_to_48_layers(solar_hub, tmp_path):
    out = run(solar_hub, tmp_path / "store", "run", "recipes/dus_solar.toml")
    merge = {s["name"]: s for s in out["stages"]}["merge"]
    config = json.loads((Path(merge["artifact"]) / "config.json").read_text())
    assert (config["num_hidden_layers"], config["architectures"]) == (48, ["MistralForCausalLM"])
    published = json.loads(solar_hub.files("tester/DUS-Mistral-7B-48L")["config.json"])
    assert published["num_hidden_layers"] == 48

"""The Hub: the ``hub`` publisher, ``sakura push`` and the ``hub`` model source, against tests/hub_server.py.

The real huggingface_hub client runs in ``sakura`` subprocesses against the loopback server, on both of
its upload paths: Xet on with every file "regular" (the ``hub`` fixture) and Xet off with LFS (``lfs_hub``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from hub_fixtures import READ_TOKEN, WRITE_TOKEN, hub, lfs_hub  # noqa: F401 - fixtures
from sakura_core.store import Store

RECIPE = """\
name = "tiny-hub"
[models]
base = "{model}"
[stages.publish]
kind = "publish"
publisher = "{publisher}"
model = "base"
{extra}
"""

CHECK_DOWNLOAD = r"""
import json, sys, tempfile
import torch
from huggingface_hub import snapshot_download
from transformers import AutoModelForCausalLM, AutoTokenizer
repo, local = sys.argv[1], sys.argv[2]
path = snapshot_download(repo, cache_dir=tempfile.mkdtemp())
ids = torch.tensor([[1, 5, 9, 42, 7, 100]])
with torch.no_grad():
    got = AutoModelForCausalLM.from_pretrained(path)(ids).logits
    want = AutoModelForCausalLM.from_pretrained(local)(ids).logits
tok = AutoTokenizer.from_pretrained(path)
text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
print(json.dumps({"equal": bool(torch.equal(got, want)), "template": text, "files": sorted(__import__("os").listdir(path))}))
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One artifact store for the module: the tiny model is generated once."""
    return tmp_path_factory.mktemp("store")


def write_recipe(tmp_path: Path, publisher: str = "hub", extra: str = 'repo_id = "tester/tiny"\nretry_wait = 0.05',
                 model: str = "tiny:llama?seed=7", name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(RECIPE.format(model=model, publisher=publisher, extra=extra))
    return path


def run_json(hub, recipe: Path, store: Path, *args: str, quiet: bool = True, **env):
    done = hub.run("run", str(recipe), "--store", str(store), "--json", *(["-q"] if quiet else []), *args, **env)
    return done, json.loads(done.stdout) if done.stdout.strip() else None


def one_line_error(done) -> str:
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    return lines[-1]


def tiny_artifact(store: Path) -> Path:
    for manifest in store.glob("artifacts/*/sakura-artifact.json"):
        if json.loads(manifest.read_text()).get("source") == "tiny":
            return manifest.parent
    raise AssertionError("no tiny model artifact in the store")


def test_publish_stage_to_a_private_hub_repo_once(hub, tmp_path, store):
    recipe = write_recipe(tmp_path, extra='repo_id = "tester/tiny"\nprivate = true\nlicense = "apache-2.0"')
    done, result = run_json(hub, recipe, store)
    assert done.returncode == 0, done.stderr
    stage = result["stages"][0]
    metrics = stage["metrics"]
    repo = hub.state.repos[("model", "tester/tiny")]
    assert repo.private and metrics["commit"] == repo.refs["main"] and metrics["changed"] is True
    assert metrics["url"] == f"{hub.endpoint}/tester/tiny"
    files = hub.files("tester/tiny")
    assert {"README.md", "sakura-lineage.json", "sakura-recipe.toml", "model.safetensors", "config.json",
            "tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= set(files)
    summary = repo.commits[repo.refs["main"]].title
    assert "tiny-hub" in summary and json.loads(files["sakura-lineage.json"])["model"]["fingerprint"][:12] in summary
    assert files["sakura-recipe.toml"].decode() == recipe.read_text()
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "license: apache-2.0" in card and "from_pretrained('tester/tiny')" in card
    published = json.loads(Path(stage["artifact"], "published.json").read_text())
    assert published["commit"] == repo.refs["main"]

    # (Loading it back and comparing logits: test_demo_recipe_publishes_to_the_hub.)

    # Publishing the unchanged artifact again (forced) makes no new commit.
    commits = hub.state.commits_on("model", "tester/tiny")
    done, result = run_json(hub, recipe, store, "--force", "publish")
    assert done.returncode == 0, done.stderr
    assert result["stages"][0]["metrics"]["changed"] is False
    assert hub.state.commits_on("model", "tester/tiny") == commits

    # The token went to the server and nowhere else: not in output, the store, or the uploaded files.
    assert WRITE_TOKEN in hub.state.seen_tokens
    secret = WRITE_TOKEN.encode()
    assert not any(WRITE_TOKEN in text for text in hub.outputs)
    assert not [p for p in store.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000 and secret in p.read_bytes() and "hf-home" not in str(p)]
    for repo in hub.state.repos.values():
        for commit in repo.commits.values():
            assert not any(secret in entry.data for entry in commit.files.values())


def test_push_over_lfs_then_use_it_as_a_hub_model(lfs_hub, tmp_path, store):
    hub = lfs_hub
    # The store's tiny model (made by the first test, or now by a local publish).
    recipe = write_recipe(tmp_path, "local", 'path = "dist/a"', name="local.toml")
    done, _ = run_json(hub, recipe, store)
    assert done.returncode == 0, done.stderr
    artifact = tiny_artifact(store)

    requests = len(hub.state.log)
    dry = hub.run("push", str(artifact), "--repo-id", "tester/pushed", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would upload" in dry.stdout and "model.safetensors" in dry.stdout and "README.md" in dry.stdout
    assert len(hub.state.log) == requests and ("model", "tester/pushed") not in hub.state.repos

    pushed = hub.run("push", str(artifact), "--repo-id", "tester/pushed", "--public")
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.startswith("published ") and "tester/pushed" in pushed.stdout
    repo = hub.state.repos[("model", "tester/pushed")]
    main = repo.commits[repo.refs["main"]]
    assert main.files["model.safetensors"].lfs and not main.files["config.json"].lfs  # both paths used
    assert main.files["model.safetensors"].data == (artifact / "model.safetensors").read_bytes()
    assert any(path.endswith("/info/lfs/objects/batch") for _, path, _ in hub.state.log)

    again = hub.run("push", str(artifact), "--repo-id", "tester/pushed")
    assert again.returncode == 0 and again.stdout.startswith("unchanged:")
    assert hub.state.commits_on("model", "tester/pushed") == 2  # the repo's first commit + one publish

    # A changed artifact to a branch, and as a pull request.
    changed = tmp_path / "changed"
    shutil.copytree(artifact, changed)
    config = json.loads((changed / "generation_config.json").read_text())
    (changed / "generation_config.json").write_text(json.dumps({**config, "max_new_tokens": 32}))
    branch = hub.run("push", str(changed), "--repo-id", "tester/pushed", "--revision", "dev", "--json")
    assert branch.returncode == 0, branch.stderr
    assert json.loads(branch.stdout)["revision"] == "dev" and repo.refs["dev"] != repo.refs["main"]
    pr = hub.run("push", str(changed), "--repo-id", "tester/pushed", "--create-pr", "--json")
    record = json.loads(pr.stdout)
    assert record["pr_url"].endswith("/discussions/1") and record["revision"] == "refs/pr/1"
    assert b"max_new_tokens" in hub.files("tester/pushed", "refs/pr/1")["generation_config.json"]
    assert b"max_new_tokens" not in hub.files("tester/pushed")["generation_config.json"]

    # The pushed repo as a `hub` model: its commit lands in the lineage and the card's base_model.
    use = write_recipe(tmp_path, "local", 'path = "dist/from-hub"', model="tester/pushed", name="use.toml")
    done, result = run_json(hub, use, tmp_path / "store2")
    assert done.returncode == 0, done.stderr
    target = tmp_path / "dist" / "from-hub"
    lineage = json.loads((target / "sakura-lineage.json").read_text())["lineage"]
    assert lineage[0]["id"] == "tester/pushed" and lineage[0]["sha"] == repo.refs["main"]
    card = (target / "README.md").read_text()
    assert "base_model: tester/pushed" in card and repo.refs["main"] in card
    assert (target / "model.safetensors").read_bytes() == (artifact / "model.safetensors").read_bytes()
    at_rev = write_recipe(tmp_path, "local", 'path = "dist/dev"', model="tester/pushed@dev", name="rev.toml")
    done, _ = run_json(hub, at_rev, tmp_path / "store2")
    assert done.returncode == 0, done.stderr
    assert b"max_new_tokens" in (tmp_path / "dist" / "dev" / "generation_config.json").read_bytes()

    # Offline: the cached copy is used; without one it is a clear error.
    offline = hub.run("plan", str(use), "--store", str(tmp_path / "store2"), "--json", offline=True)
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["stages"][0]["status"] == "cached"
    empty = hub.run("plan", str(use), "--store", str(tmp_path / "store3"), offline=True, home=tmp_path / "empty-home")
    message = one_line_error(empty)
    assert "tester/pushed@main is not in the Hugging Face cache" in message and "HF_HUB_OFFLINE" in message


def test_hub_model_errors(hub, tmp_path):
    hub.seed_repo("tester/pickled", {"config.json": b"{}", "pytorch_model.bin": b"not really"})
    cases = {
        "tester/pickled": "has only pickled weights (pytorch_model.bin)",
        "tester/missing": "model tester/missing not found on",
        "tester/pickled@v9": "has no revision 'v9'",
    }
    for model, words in cases.items():
        recipe = write_recipe(tmp_path, "local", 'path = "d"', model=model)
        done = hub.run("plan", str(recipe), "--store", str(tmp_path / "s"))
        assert words in one_line_error(done), done.stderr
    bad = write_recipe(tmp_path, "local", 'path = "d"', model="tny:llama")
    done = hub.run("validate", str(bad))
    assert done.returncode == 2 and "models.base: invalid Hub repo id 'tny:llama'" in one_line_error(done)


def test_bad_repo_id_and_refused_tokens(hub, tmp_path, store):
    bad = write_recipe(tmp_path, extra='repo_id = "tester//bad"')
    done = hub.run("validate", str(bad))
    assert done.returncode == 2
    assert one_line_error(done).startswith("recipe.toml: stages.publish.repo_id: invalid Hub repo id 'tester//bad'")
    done = hub.run("push", str(tmp_path), "--repo-id", "-bad-")
    assert done.returncode == 2 and "--repo-id: invalid Hub repo id '-bad-'" in one_line_error(done)
    # A bare name goes to the token owner's namespace; a token the Hub refuses cannot say whose.
    bare = write_recipe(tmp_path, extra='repo_id = "tiny"', name="bare.toml")
    done, _ = run_json(hub, bare, store, token="hf_wrongTokenSECRET0000")
    message = one_line_error(done)
    assert "cannot tell whose namespace tiny goes to" in message and "HTTP 401" in message
    assert "hf_wrongTokenSECRET0000" not in done.stdout + done.stderr

    recipe = write_recipe(tmp_path)
    for token, status in (("hf_wrongTokenSECRET0000", 401), (READ_TOKEN, 403)):
        done, result = run_json(hub, recipe, store, token=token)
        message = one_line_error(done)
        assert f"refused the token for tester/tiny (HTTP {status})" in message
        assert token not in done.stdout + done.stderr
        assert result["stages"][0]["status"] == "failed" and result["stages"][0]["artifact"] is None
    assert ("model", "tester/tiny") not in hub.state.repos
    done, _ = run_json(hub, recipe, store, token=None)
    assert "no Hugging Face token to publish tester/tiny" in one_line_error(done)
    done, _ = run_json(hub, recipe, store, offline=True)
    assert "cannot publish tester/tiny: HF_HUB_OFFLINE is set" in one_line_error(done)
    artifact = tiny_artifact(store)
    done = hub.run("push", str(artifact), "--repo-id", "tester/tiny", token=READ_TOKEN)
    assert "refused the token for tester/tiny (HTTP 403)" in one_line_error(done)
    assert ("model", "tester/tiny") not in hub.state.repos

    # A bare name is the token owner's, in the repo and in the card's from_pretrained; the store remembers it.
    done = hub.run("push", str(artifact), "--repo-id", "tiny-bare")
    assert done.returncode == 0, done.stderr
    assert "from_pretrained('tester/tiny-bare')" in hub.files("tester/tiny-bare")["README.md"].decode()
    newest = Store(store).publications(artifact.name)[0]
    assert (newest["repo_id"], newest["commit"]) == ("tester/tiny-bare", hub.state.repos[("model", "tester/tiny-bare")].refs["main"])

    # The token of `hf auth login` ($HF_HOME/token) is used when HF_TOKEN is not set.
    (hub.home / "token").write_text(WRITE_TOKEN)
    done = hub.run("push", str(artifact), "--repo-id", "tester/tiny", token=None)
    assert done.returncode == 0, done.stderr
    assert "README.md" in hub.files("tester/tiny") and WRITE_TOKEN not in done.stdout + done.stderr


def test_a_publish_stage_republishes_what_the_hub_no_longer_holds(hub, tmp_path, store):
    recipe = write_recipe(tmp_path)
    done, result = run_json(hub, recipe, store)
    assert done.returncode == 0, done.stderr
    published = json.loads(Path(result["stages"][0]["artifact"], "published.json").read_text())
    weights = hub.files("tester/tiny")["model.safetensors"]
    assert published["files"]["model.safetensors"] == hashlib.sha1(b"blob %d\0" % len(weights) + weights).hexdigest()

    hub.commit("tester/tiny", {"NOTES.md": b"someone's notes"})  # a later commit that changes nothing published
    done, result = run_json(hub, recipe, store)
    assert result["stages"][0]["status"] == "cached"

    overwritten = hub.commit("tester/tiny", {"model.safetensors": b"other weights"})
    plan = hub.run("plan", str(recipe), "--store", str(store), "--json")
    stage = json.loads(plan.stdout)["stages"][0]
    assert stage["status"] == "will run" and stage["notes"] == [
        f"tester/tiny@main no longer holds what was published: model.safetensors changed since commit {published['commit'][:10]}"]
    done, result = run_json(hub, recipe, store, quiet=False)
    assert result["stages"][0]["status"] == "ran" and "model.safetensors changed since commit" in done.stderr
    assert hub.files("tester/tiny")["model.safetensors"] == weights
    assert hub.state.repos[("model", "tester/tiny")].commits[hub.state.repos[("model", "tester/tiny")].refs["main"]].parent == overwritten

    del hub.state.repos[("model", "tester/tiny")]
    plan = hub.run("plan", str(recipe), "--store", str(store), "--json")
    assert json.loads(plan.stdout)["stages"][0]["notes"] == [f"tester/tiny is gone from {hub.endpoint} (deleted, or the token cannot read it)"]
    done, result = run_json(hub, recipe, store)
    assert result["stages"][0]["status"] == "ran" and hub.files("tester/tiny")["model.safetensors"] == weights
    # offline nothing can be checked: the publication stands as recorded
    offline = hub.run("plan", str(recipe), "--store", str(store), "--json", offline=True)
    assert json.loads(offline.stdout)["stages"][0]["status"] == "cached"


def test_a_hub_that_never_answers_times_out_is_retried_and_ends_in_one_line(hub, tmp_path, store):
    """The server reads the commit request and never answers: the call times out (SAKURA_HUB_TIMEOUT), is retried
    like a lost connection, then the run ends in one line instead of waiting forever."""
    recipe = write_recipe(tmp_path, extra='repo_id = "tester/silent"\nretries = 2\nretry_wait = 0.05')
    hub.state.faults["hang_commit"] = 2
    done, result = run_json(hub, recipe, store, quiet=False, SAKURA_HUB_TIMEOUT="2")
    message = one_line_error(done)
    assert "could not publish to" in message and "tester/silent after 2 attempts" in message and "Timeout" in message, message
    assert "retrying" in done.stderr and result["stages"][-1]["artifact"] is None
    assert done.seconds < 120  # type: ignore[attr-defined]
    assert hub.state.commits_on("model", "tester/silent") == 1  # the repo's creation; nothing published

    done, result = run_json(hub, recipe, store, SAKURA_HUB_TIMEOUT="bad")
    assert one_line_error(done) == "stage publish: SAKURA_HUB_TIMEOUT='bad': must be a number of seconds above 0"


def test_connection_lost_is_retried_then_fails_cleanly_and_a_rerun_completes(hub, tmp_path, store):
    recipe = write_recipe(tmp_path)
    hub.state.faults["drop_commit"] = 1
    done, result = run_json(hub, recipe, store, quiet=False)
    assert done.returncode == 0, done.stderr
    assert "retrying" in done.stderr and hub.state.commits_on("model", "tester/tiny") == 2
    dropped = [entry for entry in hub.state.log if entry[2] == 0]
    assert len(dropped) == 1 and "/commit/" in dropped[0][1]

    hub.state.faults["drop_commit"] = 100
    forced = ("--force", "publish")
    recipe2 = write_recipe(tmp_path, extra='repo_id = "tester/tiny2"\nretries = 2\nretry_wait = 0.05', name="r2.toml")
    done, result = run_json(hub, recipe2, store, *forced)
    message = one_line_error(done)
    assert "could not publish to" in message and "tester/tiny2 after 2 attempts" in message and "nothing was committed" in message
    assert result["stages"][0]["artifact"] is None
    assert hub.state.commits_on("model", "tester/tiny2") == 1 and "README.md" not in hub.files("tester/tiny2")
    assert not list(store.glob("tmp/*"))

    hub.state.faults.clear()
    done, result = run_json(hub, recipe2, store)
    assert done.returncode == 0, done.stderr
    assert "README.md" in hub.files("tester/tiny2") and result["stages"][0]["metrics"]["changed"] is True


MERGE_RECIPE = """\
name = "hub-merge"
[models]
a = "tester/tiny-a"
b = {{ source = "hub", id = "tester/tiny-b", revision = "main" }}

[stages.merge]
kind = "merge"
merge_method = "slerp"
base_model = "a"
dtype = "float32"
slices = [{{ sources = [{{ model = "a", layer_range = [0, 2] }}, {{ model = "b", layer_range = [0, 2] }}] }}]
parameters = {{ t = 0.5 }}

[stages.publish]
kind = "publish"
publisher = "hub"
model = "merge"
repo_id = "tester/merged"
"""


def test_hub_models_merged_and_published_with_their_lineage(hub, tmp_path, tiny_model_factory):
    shas = {}
    for name, seed in (("tiny-a", 11), ("tiny-b", 12)):
        model = tiny_model_factory(seed=seed, layers=2)
        files = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
        files["README.md"] = b"---\nlicense: apache-2.0\n---\n# tiny\n"
        shas[name] = hub.seed_repo(f"tester/{name}", files)
    recipe = tmp_path / "merge.toml"
    recipe.write_text(MERGE_RECIPE.format())
    done, result = run_json(hub, recipe, tmp_path / "store")
    assert done.returncode == 0, done.stderr
    files = hub.files("tester/merged")
    lineage = json.loads(files["sakura-lineage.json"])["lineage"]
    assert [(e["id"], e["sha"]) for e in lineage if e.get("source") == "hub"] == [
        ("tester/tiny-a", shas["tiny-a"]), ("tester/tiny-b", shas["tiny-b"])]
    import yaml

    card = files["README.md"].decode()
    front = yaml.safe_load(card.split("---\n", 2)[1])
    assert front["base_model"] == ["tester/tiny-a", "tester/tiny-b"] and front["base_model_relation"] == "merge"
    assert front["license"] == "apache-2.0" and {"merge", "mergekit", "slerp", "sakura"} <= set(front["tags"])
    assert "Merge method: **slerp**" in card and "layer_range: [0, 2]" in card
    merged = Path(result["stages"][0]["artifact"])
    assert files["model.safetensors"] == (merged / "model.safetensors").read_bytes()

    # The published merge configuration names the models at their commits, as mergekit reads them, with
    # mergekit's keys only: `sakura merge` and mergekit-yaml both run it as it is.
    config = yaml.safe_load(files["mergekit_config.yml"])
    assert config["base_model"] == f"tester/tiny-a@{shas['tiny-a']}"
    assert [s["model"] for s in config["slices"][0]["sources"]] == [f"tester/tiny-a@{shas['tiny-a']}", f"tester/tiny-b@{shas['tiny-b']}"]
    (tmp_path / "mergekit_config.yml").write_bytes(files["mergekit_config.yml"])
    done = hub.run("merge", "mergekit_config.yml", "by-sakura", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "by-sakura" / "model.safetensors").read_bytes() == files["model.safetensors"]
    done = hub.python("-m", "mergekit.scripts.run_yaml", "mergekit_config.yml", "by-mergekit", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    import torch
    from safetensors.torch import load_file

    ours, theirs = load_file(merged / "model.safetensors"), load_file(next((tmp_path / "by-mergekit").glob("*.safetensors")))
    assert ours.keys() == theirs.keys() and all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in ours)


def test_hub_dataset_repo_loads_with_datasets(hub):
    rows = "".join(json.dumps({"question": f"q{i}", "chosen": f"c{i}", "rejected": f" r{i}"}) + "\n" for i in range(5))
    hub.seed_repo("tester/prefs", {"data/train.jsonl": rows.encode(), "README.md": b"# prefs\n"}, repo_type="dataset")
    done = hub.python("-c", "import datasets; d = datasets.load_dataset('tester/prefs', split='train'); print(len(d), d[4]['rejected'])")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5", "r4"]
    assert any("/api/datasets/tester/prefs/" in path for _, path, _ in hub.state.log)


def test_demo_recipe_publishes_to_the_hub(hub, tmp_path):
    """recipes/tiny.toml (merge -> data -> DPO -> publish), its publish stage pointed at the loopback Hub."""
    demo = Path(__file__).resolve().parent.parent / "recipes"
    for folder in ("data", "tasks"):  # the demo's data and its eval stage's task
        shutil.copytree(demo / folder, tmp_path / folder)
    text = (demo / "tiny.toml").read_text()
    head = text[: text.index("[stages.publish]")]
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(head + '[stages.publish]\nkind = "publish"\npublisher = "hub"\nmodel = "dpo"\nrepo_id = "tester/tiny-sakura"\n')
    quick = [  # a few rows, steps and questions: this checks publishing, not training (8 rows are held out)
        "-s", 'stages.data.sources=[{adapter="orca", path="data/tiny_orca.jsonl", max_rows=16}]',
        "-s", "stages.dpo.args={learning_rate=5e-5, beta=0.1, per_device_train_batch_size=4, max_steps=2, max_length=256, seed=42}",
        "-s", 'stages.trivia.options={tasks=["sakura_trivia"], task_files=["tasks/sakura_trivia.yaml"], limit=4}',
    ]
    done, result = run_json(hub, recipe, tmp_path / "store", *quick)
    assert done.returncode == 0, done.stderr
    stages = {s["name"]: s for s in result["stages"]}
    assert stages["publish"]["metrics"]["commit"] == hub.state.repos[("model", "tester/tiny-sakura")].refs["main"]

    check = hub.python("-c", CHECK_DOWNLOAD, "tester/tiny-sakura", stages["dpo"]["artifact"])
    assert check.returncode == 0, check.stderr
    loaded = json.loads(check.stdout.strip().splitlines()[-1])
    assert loaded["equal"] and loaded["template"] == "### User:\nhi\n\n### Assistant:\n"
    assert {"README.md", "sakura-lineage.json", "sakura-recipe.toml"} <= set(loaded["files"])

    import yaml

    card = hub.files("tester/tiny-sakura")["README.md"].decode()
    front = yaml.safe_load(card.split("---\n", 2)[1])
    assert {"sakura", "merge", "mergekit", "slerp", "dpo", "trl", "lora"} <= set(front["tags"])
    for words in ("## Merge (stage `merge`)", "value: [0, 0.5, 0.3, 0.7, 1]", "## Data (stage `data`)",
                  "16 of 64 rows used", "## Training (stage `dpo`)", "| beta | 0.1 |", "| max_steps | 2 |",
                  "| reward_accuracy |", "## Recipe", 'repo_id = "tester/tiny-sakura"', "from_pretrained('tester/tiny-sakura')"):
        assert words in card, words

"""Hub dataset sources through ``datasets.load_dataset`` against tests/hub_server.py (HF_ENDPOINT).

The stage's fingerprint holds the commit a revision resolves to: a new upstream commit re-runs the stage,
an unchanged one is cached, and a pinned revision reads exactly that commit.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

from hub_fixtures import hub  # noqa: F401 - fixture
from hub_server import Commit, FileEntry, git_blob_sha1

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ORCA = FIXTURES / "orca_dpo_pairs.sample.jsonl"
TOXIC = FIXTURES / "toxic_dpo_v0.1.sample.jsonl"


def add_commit(hub, repo_id: str, files: dict[str, bytes]) -> str:
    repo = hub.state.repos[("dataset", repo_id)]
    entries = {p: FileEntry(len(d), hashlib.sha256(d).hexdigest(), git_blob_sha1(d), False, d) for p, d in files.items()}
    commit = Commit(hub.state.new_oid(repo_id, "2"), repo.refs["main"], "update", "", entries, "2026-01-02T00:00:00.000Z")
    repo.commits[commit.oid] = commit
    repo.refs["main"] = commit.oid
    return commit.oid


def run_json(hub, recipe: Path) -> dict:
    return hub.run_json("run", str(recipe), cwd=recipe.parent)


def test_hub_dataset_revisions_and_fingerprints(hub, tmp_path):
    first = hub.seed_repo("intel/orca-mini", {"data/train.jsonl": ORCA.read_bytes()}, repo_type="dataset")
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent(f"""
        name = "t"
        [stages.latest]
        kind = "dataset"
        sources = [{{ adapter = "orca", path = "intel/orca-mini", split = "train" }}]
        [stages.pinned]
        kind = "dataset"
        sources = [{{ adapter = "orca", path = "intel/orca-mini", revision = "{first}" }}]
        """))
    out = run_json(hub, recipe)
    assert [(s["status"], s["metrics"]["rows_train"]) for s in out["stages"]] == [("ran", 2), ("ran", 2)]
    assert [s["status"] for s in run_json(hub, recipe)["stages"]] == ["cached", "cached"]

    one_row = ORCA.read_text().splitlines()[1] + "\n"
    add_commit(hub, "intel/orca-mini", {"data/train.jsonl": one_row.encode()})
    out = run_json(hub, recipe)
    latest, pinned = out["stages"]
    assert (latest["status"], latest["metrics"]["rows_train"]) == ("ran", 1)  # new upstream commit: re-run
    assert pinned["status"] == "cached"
    stats = json.loads((Path(latest["artifact"]) / "stats.json").read_text())
    assert stats["sources"][0]["source"] == "intel/orca-mini"


def test_hub_dataset_missing_column_and_unknown_repo(hub, tmp_path):
    hub.seed_repo("unalignment/toxic-mini", {"train.jsonl": TOXIC.read_bytes()}, repo_type="dataset")
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""
        name = "t"
        [stages.data]
        kind = "dataset"
        sources = [{ adapter = "orca", path = "unalignment/toxic-mini" }]
        """))
    done = hub.run("run", str(recipe), cwd=tmp_path)
    assert done.returncode == 1
    assert (
        "stage data: source 0 (unalignment/toxic-mini, adapter orca): missing column(s) question; "
        "expected question, chosen, rejected; found id, prompt, chosen, rejected"
    ) in done.stdout + done.stderr
    recipe.write_text(recipe.read_text().replace("unalignment/toxic-mini", "nobody/nothing"))
    done = hub.run("run", str(recipe), cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert (
        "stage data: source 0 (nobody/nothing, adapter orca): cannot load Hub dataset: DatasetNotFoundError: "
        "Dataset 'nobody/nothing' doesn't exist on the Hub"
    ) in done.stderr


def test_hub_dataset_subset_and_split(hub, tmp_path):
    """``subset`` picks a config declared in the dataset card, ``split`` one of its splits."""
    readme = textwrap.dedent("""
        ---
        configs:
        - config_name: orca
          data_files:
          - split: train
            path: orca/train.jsonl
        - config_name: math
          data_files:
          - split: train
            path: math/train.jsonl
          - split: test
            path: math/test.jsonl
        ---
        # mixed preference data
        """).lstrip()
    math_lines = (FIXTURES / "distilabel_math_preference_dpo.sample.jsonl").read_text().splitlines(keepends=True)
    hub.seed_repo(
        "someone/mixed",
        {
            "README.md": readme.encode(),
            "orca/train.jsonl": ORCA.read_bytes(),
            "math/train.jsonl": "".join(math_lines[:5]).encode(),
            "math/test.jsonl": "".join(math_lines[5:]).encode(),
        },
        repo_type="dataset",
    )
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""
        name = "t"
        [stages.data]
        kind = "dataset"
        sources = [
          { adapter = "math", path = "someone/mixed", subset = "math", split = "test" },
          { adapter = "orca", path = "someone/mixed", subset = "orca" },
        ]
        shuffle = false
        """))
    out = run_json(hub, recipe)
    stats = json.loads((Path(out["stages"][0]["artifact"]) / "stats.json").read_text())
    assert [s["rows_in"] for s in stats["sources"]] == [3, 2]
    assert stats["rows"] == {"train": 5}


def test_hub_dataset_data_dir_and_data_files(hub, tmp_path):
    """HelpSteer2 keeps its preference data in a folder of the repo (``data_dir = "preference"``) beside data
    with other columns; ``data_files`` picks files by name."""
    hub.seed_repo(
        "someone/helpsteer-mini",
        {"train.jsonl": TOXIC.read_bytes(), "preference/train.jsonl": ORCA.read_bytes()},
        repo_type="dataset",
    )
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""
        name = "t"
        [stages.data]
        kind = "dataset"
        sources = [
          { adapter = "orca", path = "someone/helpsteer-mini", data_dir = "preference" },
          { adapter = "toxic", path = "someone/helpsteer-mini", data_files = "train.jsonl" },
        ]
        shuffle = false
        """))
    out = run_json(hub, recipe)
    stats = json.loads((Path(out["stages"][0]["artifact"]) / "stats.json").read_text())
    assert [s["rows_in"] for s in stats["sources"]] == [2, len(TOXIC.read_text().splitlines())]


def plan_json(hub, recipe: Path, **env) -> dict:
    done = hub.run("plan", str(recipe), "--json", cwd=recipe.parent, **env)
    assert done.returncode == 0, done.stderr
    return {s["stage"]: s for s in json.loads(done.stdout)["stages"]}


def test_a_dataset_at_its_commit_online_and_offline(hub, tmp_path):
    """The commit is in the manifest and lineage; plan says when main moved; offline, the commit the last run
    read comes from the Hugging Face cache, so nothing re-runs."""
    first = hub.seed_repo("intel/orca-mini", {"data/train.jsonl": ORCA.read_bytes()}, repo_type="dataset")
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "t"\n[stages.data]\nkind = "dataset"\nsources = [{ adapter = "orca", path = "intel/orca-mini" }]\n')
    out = run_json(hub, recipe)
    manifest = json.loads((Path(out["stages"][0]["artifact"]) / "sakura-artifact.json").read_text())
    assert manifest["external"] == {"sources[0]": {"hub": "intel/orca-mini", "revision": first}}
    assert plan_json(hub, recipe, offline=True)["data"]["status"] == "cached"

    second = add_commit(hub, "intel/orca-mini", {"data/train.jsonl": ORCA.read_text().splitlines()[0].encode() + b"\n"})
    moved = plan_json(hub, recipe)["data"]
    assert moved["status"] == "will run"
    assert moved["notes"][0].endswith(f"): sources[0].revision {first[:10]} -> {second[:10]}")
    assert plan_json(hub, recipe, offline=True)["data"]["status"] == "cached"  # offline: what the cache holds
    assert run_json(hub, recipe)["stages"][0]["metrics"]["rows_train"] == 1
    assert plan_json(hub, recipe, offline=True)["data"]["status"] == "cached"  # the new commit, from the cache

    done = hub.run("plan", str(recipe), cwd=tmp_path, offline=True, home=tmp_path / "empty-home")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(
        "r.toml: stages.data: dataset intel/orca-mini@main is not in the Hugging Face cache "
        f"({tmp_path / 'empty-home' / 'hub'}) and HF_HUB_OFFLINE is set; download it once online, or pin the revision "
        "to a cached commit")

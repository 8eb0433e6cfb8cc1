"""The plugin packages a user copies or generates, as CI sees them.

``examples/sakura-example-merge``, ``examples/sakura-example-dataset`` and one package per kind written by
``sakura new-plugin`` are installed with pip into a private site directory (the global environment is not
touched: ``--target``, and the dist-info there makes their entry points visible on ``PYTHONPATH``). Then
each package's own tests run against that install, ``sakura plugins`` lists them all, and one recipe runs
a whole pipeline on third-party plugins only: the ``geometric`` merge, the ``ultrafeedback`` adapter and
the generated trainer and publisher.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
KINDS = ("merge", "dataset", "trainer", "publisher")
# generated package per kind: distribution "sakura-ci-merge", module sakura_ci_merge, registered as "ci_merge"
GENERATED = {kind: f"sakura-ci-{kind}" for kind in KINDS}
EXAMPLE_PACKAGES = ("sakura-example-merge", "sakura-example-dataset")
JUNK = shutil.ignore_patterns("*.egg-info", "build", "dist", "__pycache__", ".sakura", ".pytest_cache")
REGISTRY = {"merge": "merge_methods", "dataset": "dataset_adapters", "trainer": "trainers", "publisher": "publishers"}


@dataclass
class Installed:
    site: Path  # the pip --target directory
    sources: dict[str, Path]  # distribution name -> its source tree (a copy, built in place by pip)

    def env(self) -> dict[str, str]:
        paths = [str(self.site), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "HF_HUB_OFFLINE": "1"}


def sakura(*args, env=None, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sakura_core", *map(str, args)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("plugin-packages")
    src = root / "src"
    sources = {}
    for name in EXAMPLE_PACKAGES:  # copies: pip builds in the source tree, and that is not the repository's
        sources[name] = Path(shutil.copytree(EXAMPLES / name, src / name, ignore=JUNK))
    for kind, name in GENERATED.items():
        result = sakura("new-plugin", name, "--kind", kind, "--dir", src)
        assert result.returncode == 0, result.stderr
        sources[name] = src / name
    site = root / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(site), *map(str, sources.values())],
        capture_output=True, text=True, timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return Installed(site, sources)


@pytest.mark.parametrize("package", [*EXAMPLE_PACKAGES, *GENERATED.values()])
def test_package_passes_its_own_tests_when_installed(installed, package):
    source = installed.sources[package]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=source, env=installed.env(), capture_output=True, text=True, timeout=300,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # nothing skipped: the entry-point test of each package ran against this install
    assert "passed" in summary and "skipped" not in summary, summary


def test_sakura_plugins_lists_every_installed_package(installed):
    result = sakura("plugins", "--json", env=installed.env())
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["problems"] == []
    listing = {p["name"]: p for p in listed["plugins"]}
    expected = {
        "example_merge": ("sakura-example-merge", {"merge_methods": ["geometric"]}),
        "example_dataset": ("sakura-example-dataset", {"dataset_adapters": ["ultrafeedback"]}),
        **{f"ci_{kind}": (name, {REGISTRY[kind]: [f"ci_{kind}"]}) for kind, name in GENERATED.items()},
    }
    for plugin, (dist, registers) in expected.items():
        assert plugin in listing, f"{plugin} not listed: {sorted(listing)}"
        assert listing[plugin]["origin"] == f"entry point of {dist}"
        assert listing[plugin]["release"] == "0.1.0" and listing[plugin]["distribution"] == dist
        assert listing[plugin]["version"] == "0.1.0+" + listing[plugin]["code"][:8]
        assert listing[plugin]["registers"] == registers
    geometric = next(e for e in listed["registries"]["merge_methods"] if e["name"] == "geometric")
    assert geometric["description"] == "Signed weighted geometric mean of the models' weights."
    assert [o["key"] for o in geometric["options"]] == ["weight", "eps"]


RECIPE = """
name = "third-party-pipeline"

[models]
a = "tiny:llama?layers=2&seed=1"
b = "tiny:llama?layers=2&seed=2"

[stages.merge]
kind = "merge"
merge_method = "geometric"                       # examples/sakura-example-merge
models = [{ model = "a", parameters = { weight = 2.0 } }, { model = "b" }]
dtype = "float32"

[stages.data]
kind = "dataset"
sources = [{ adapter = "ultrafeedback", path = "ultrafeedback.jsonl", options = { min_score_margin = 1.0 } }]
tokenizer = "merge"
max_length = 256

[stages.train]
kind = "train"
trainer = "ci_trainer"                           # generated by sakura new-plugin
model = "merge"
dataset = "data"
lora = { r = 4, alpha = 8, dropout = 0.0, target_modules = ["q_proj", "v_proj"] }
args = { learning_rate = 1e-3, per_device_train_batch_size = 2, max_steps = 2, max_length = 256, seed = 1 }

[stages.ship]
kind = "publish"
publisher = "ci_publisher"                       # generated by sakura new-plugin
model = "train"
archive = "dist/model.tar.gz"
"""


def test_recipe_runs_on_installed_third_party_plugins(installed, tmp_path):
    shutil.copy(
        EXAMPLES / "sakura-example-dataset" / "tests" / "data" / "ultrafeedback_binarized.sample.jsonl",
        tmp_path / "ultrafeedback.jsonl",
    )
    recipe = tmp_path / "pipeline.toml"
    recipe.write_text(textwrap.dedent(RECIPE))
    result = sakura("run", recipe, "--json", "-q", env=installed.env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stages = {s["name"]: s for s in json.loads(result.stdout)["stages"]}
    assert [s["status"] for s in stages.values()] == ["ran"] * 4
    data = stages["data"]["metrics"]
    assert (data["rows_in"], data["rows_train"]) == (6, 4)
    assert data["dropped"] == {"score margin below 1": 2}
    assert stages["train"]["metrics"]["steps"] == 2
    with tarfile.open(tmp_path / "dist" / "model.tar.gz") as tar:
        lineage = json.load(tar.extractfile("sakura-lineage.json"))
        card = tar.extractfile("README.md").read().decode()
    # The lineage and the card name every plugin package that made the model, with its version and code.
    made = {p["distribution"]: p for p in lineage["plugins"]}
    assert {"sakura-example-merge", "sakura-example-dataset", "sakura-ci-trainer", "sakura-ci-publisher",
            "sakura-recipes"} <= set(made)
    assert made["sakura-example-merge"]["provides"] == ["merge method geometric"]
    assert made["sakura-ci-publisher"]["provides"] == ["publisher ci_publisher"]
    for dist in ("sakura-example-merge", "sakura-example-dataset", "sakura-ci-trainer"):
        assert f"| {dist} 0.1.0 | `{made[dist]['code'][:12]}` |" in card
    # A third-party method is described as itself, not as mergekit's.
    assert ("Merge method: **geometric**, from plugin `example_merge` (sakura-example-merge 0.1.0): Signed weighted "
            "geometric mean of the models' weights.") in card
    assert "mergekit semantics" not in card and "\n- mergekit\n" not in card
    assert "mergekit does not know this method; `sakura merge` runs it with sakura-example-merge 0.1.0 installed" in card

    again = sakura("run", recipe, "--json", "-q", env=installed.env())
    assert again.returncode == 0, again.stderr
    assert [s["status"] for s in json.loads(again.stdout)["stages"]] == ["cached"] * 4


def test_new_plugin_refuses_and_writes_nothing(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    cases = {
        ("Bad Name", "merge"): "invalid plugin name 'Bad Name': use lowercase letters and digits",
        ("taken", "dataset"): f"{tmp_path / 'taken'} already exists; choose another name or --dir",
        ("json", "publisher"): "a module named json is already importable",
        ("dpo", "trainer"): "trainer 'dpo' already exists (plugin sakura_trl.plugin); choose another name",
        ("fine", "mergee"): "unknown kind 'mergee' (did you mean merge?) (one of merge, dataset, trainer, publisher)",
    }
    for (name, kind), message in cases.items():
        result = sakura("new-plugin", name, "--kind", kind, "--dir", tmp_path)
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
        assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]

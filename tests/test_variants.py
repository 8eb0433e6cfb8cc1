"""Variants in one recipe: expansion and validation, shared stages run once, a failing variant leaves the others
done, plan's grid, compare's table (JSON, CSV, markdown, HTML in a real headless browser)."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from sakura_core.recipe import load_family

REPO = Path(__file__).resolve().parent.parent
TINY = "tiny:llama?layers=2&hidden=32&intermediate=64&heads=2&kv_heads=1"

FAMILY = f"""
name = "tiny-family"

[models]
solar = "{TINY}&seed=1"
sauerkraut = "{TINY}&seed=2"

[stages.merge]
kind = "merge"
merge_method = "slerp"
base_model = "solar"
models = [{{ model = "solar" }}, {{ model = "sauerkraut" }}]
parameters = {{ t = 0.5 }}
dtype = "float32"

[stages.data]
kind = "dataset"
sources = [{{ adapter = "orca", path = "data/tiny_orca.jsonl" }}]
tokenizer = "merge"
max_length = 256
test_size = 8

[stages.dpo]
kind = "train"
model = "merge"
dataset = "data"
lora = {{ r = 4, alpha = 8, dropout = 0.0 }}
args = {{ learning_rate = 1e-3, beta = 0.1, per_device_train_batch_size = 4, max_steps = 2, seed = 1 }}

[stages.heldout]
kind = "eval"
model = "dpo"
evaluator = "preference"
inputs = {{ dataset = "data" }}

[stages.publish]
kind = "publish"
publisher = "local"
model = "dpo"
path = "dist/{{variant}}"

[variants.fast]
"stages.dpo.args.learning_rate" = 1e-3

[variants.slow]
"stages.dpo.args.learning_rate" = 5e-4

[variants.nosys]
"stages.data.sources" = [{{ adapter = "orca", path = "data/tiny_orca.jsonl", options = {{ system = false }} }}]
"""


@pytest.fixture
def family_dir(tmp_path):
    shutil.copytree(REPO / "recipes" / "data", tmp_path / "data")
    (tmp_path / "family.toml").write_text(FAMILY)
    return tmp_path


def test_variants_and_the_matrix_expand_into_whole_recipes(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(FAMILY.split("[variants.fast]")[0] + textwrap.dedent("""
        [variants.orca]
        [variants.nosys]
        "stages.data.sources" = [{ adapter = "orca", path = "data/tiny_orca.jsonl", options = { system = false } }]

        [matrix]
        "stages.dpo.args.learning_rate" = [1e-3, 5e-4]
        "stages.dpo.lora.r" = [4, 8]
    """))
    shutil.copytree(REPO / "recipes" / "data", tmp_path / "data")
    family = load_family(path)
    assert list(family.variants) == [
        f"{base}_learning_rate-{lr}_r-{r}" for base in ("orca", "nosys") for lr in ("0.001", "0.0005") for r in (4, 8)
    ]
    member = family.variants["nosys_learning_rate-0.0005_r-8"]
    assert member.variant == "nosys_learning_rate-0.0005_r-8"
    assert member.stages["dpo"].options.args["learning_rate"] == 5e-4 and member.stages["dpo"].options.lora.r == 8
    assert member.stages["data"].options.sources[0].options == {"system": False}
    assert member.stages["publish"].options.publisher_raw()["path"] == "dist/nosys_learning_rate-0.0005_r-8"
    assert member.text.startswith("# the recipe as it ran\n# applied: stages.data.sources=")
    only = load_family(path, only=["orca_learning_rate-0.001_r-4"])
    assert list(only.variants) == ["orca_learning_rate-0.001_r-4"]


@pytest.mark.parametrize("text, message", [
    ('[variants.bad]\n"stages.dpo.args.learning_rate" = -1\n',
     "family.toml: variants.bad.stages.dpo.args.learning_rate: must be positive (got -1)"),
    ('[variants.bad]\n"stages.dpo.args.learnin_rate" = 1e-4\n',
     "family.toml: variants.bad.stages.dpo.args.learnin_rate: unknown option for trl's DPOConfig (did you mean learning_rate?)"),
    ('[variants."has space"]\n', "family.toml: variants.has space: variant names are letters, digits"),
    ('[variants.x]\nlearning_rate = 1\n', "family.toml: variants.x: 'learning_rate' is not a recipe key to override"),
    ('[matrix]\n"stages.dpo.args.learning_rate" = 1e-3\n', 'family.toml: matrix."stages.dpo.args.learning_rate": must be a non-empty list'),
    ("variants = 3\n", "family.toml: variants: must be a table"),
])
def test_a_bad_variant_is_one_line_naming_it(family_dir, sakura, text, message):
    path = family_dir / "family.toml"
    base = FAMILY.split("[variants.fast]")[0]
    path.write_text(text + base if text.startswith("variants =") else base + text)
    result = sakura("validate", path, check=2)
    assert result.stderr.strip().startswith(message), result.stderr
    assert not (family_dir / ".sakura").exists()


def test_variant_placeholder_and_selection_mistakes(family_dir, sakura):
    path = family_dir / "family.toml"
    assert sakura("run", path, "--variant", "fats", check=2).stderr.strip() == (
        "family.toml: --variant fats: no such variant (did you mean fast?) (variants: fast, slow, nosys)")
    path.write_text(FAMILY.split("[variants.fast]")[0])
    assert sakura("validate", path, check=2).stderr.strip() == (
        "family.toml: uses {variant}, but the recipe declares no variants ([variants.NAME] or [matrix])")


@pytest.mark.slow
def test_a_family_runs_shared_stages_once_and_compares(family_dir, sakura):
    path = family_dir / "family.toml"
    plan = json.loads(sakura("plan", path, "--json", check=0).stdout)
    assert set(plan["variants"]) == {"fast", "slow", "nosys"}
    assert plan["grid"]["merge"]["fast"]["shared_with"] == 3 and plan["grid"]["data"]["fast"]["shared_with"] == 2
    assert plan["grid"]["dpo"]["nosys"]["shared_with"] == 1 and plan["totals"]["stages_to_run"] == 1 + 2 + 3 * 3

    out = json.loads(sakura("run", path, "--json", "-q", check=0).stdout)
    assert out["ok"] and set(out["variants"]) == {"fast", "slow", "nosys"}
    stages = {v: {s["name"]: s for s in r["stages"]} for v, r in out["variants"].items()}
    ran = {(s["name"], s["fingerprint"]) for r in stages.values() for s in r.values() if s["status"] == "ran"}
    # every distinct stage ran once: one merge, two datasets, three trainings, evaluations and publications
    assert sorted(name for name, _ in ran) == ["data", "data", "dpo", "dpo", "dpo", "heldout", "heldout", "heldout",
                                               "merge", "publish", "publish", "publish"]
    assert stages["fast"]["merge"]["fingerprint"] == stages["nosys"]["merge"]["fingerprint"]
    assert stages["fast"]["data"]["fingerprint"] == stages["slow"]["data"]["fingerprint"] != stages["nosys"]["data"]["fingerprint"]
    # the reference log-probs: computed for fast, reused by slow (same model and data), computed again for nosys
    hits = {v: stages[v]["dpo"]["metrics"]["ref_cache_hit"] for v in stages}
    assert sum(hits.values()) == 1 and hits["nosys"] is False
    assert sorted(p.name for p in (family_dir / "dist").iterdir()) == ["fast", "nosys", "slow"]

    again = json.loads(sakura("run", path, "--json", "-q", "--variant", "slow", check=0).stdout)
    assert list(again["variants"]) == ["slow"] and {s["status"] for s in again["variants"]["slow"]["stages"]} == {"cached"}

    compared = json.loads(sakura("compare", path, "--json", check=0).stdout)
    columns = [c["name"] for c in compared["columns"]]
    assert columns[:2] == ["stages.dpo.args.learning_rate", "stages.data.sources"]
    assert {"dpo loss", "dpo reward_accuracy", "heldout preference reward_accuracy"} <= set(columns)
    rows = compared["rows"]
    assert (rows["fast"]["stages.dpo.args.learning_rate"], rows["slow"]["stages.dpo.args.learning_rate"]) == (1e-3, 5e-4)
    assert rows["nosys"]["stages.data.sources"][0]["options"] == {"system": False}
    assert rows["fast"]["dpo loss"] == stages["fast"]["dpo"]["metrics"]["loss"]
    best = compared["best"]["dpo loss"]
    assert best == min(rows[v]["dpo loss"] for v in rows)
    assert set(compared["curves"]["dpo loss"]) == {"fast", "slow", "nosys"}

    ordered = json.loads(sakura("compare", path, "--json", "--sort", "dpo loss", check=0).stdout)["order"]
    assert [rows[v]["dpo loss"] for v in ordered] == sorted(rows[v]["dpo loss"] for v in rows)
    csv = sakura("compare", path, "--csv", check=0).stdout.splitlines()
    assert csv[0].startswith("variant,stages.dpo.args.learning_rate,") and len(csv) == 4
    markdown = sakura("compare", path, "--markdown", check=0).stdout
    assert markdown.count("\n") == 5 and "**" in markdown

    report = family_dir / "report.html"
    sakura("compare", path, "--html", report, check=0)
    check_report_in_a_browser(report, variants=3, curves=len(compared["curves"]))


def test_a_failing_variant_leaves_the_others_done(family_dir, sakura):
    """A variant whose data cannot be read fails (its training, evaluation and publication are skipped); the
    others run to the end; the exit code says a variant failed."""
    (family_dir / "data" / "broken.jsonl").write_text('{"question": "q", "chosen": "a", "rejected": "b"}\n{not json\n')
    path = family_dir / "family.toml"
    text = FAMILY.split("[variants.fast]")[0].replace("max_steps = 2", "max_steps = 1")
    path.write_text(text + textwrap.dedent("""
        [variants.good]
        [variants.broken]
        "stages.data.sources" = [{ adapter = "orca", path = "data/broken.jsonl" }]
    """))
    result = sakura("run", path, "--json", "-q", check=1)
    out = json.loads(result.stdout)
    assert out["ok"] is False and out["variants"]["good"]["ok"] is True
    broken = {s["name"]: s["status"] for s in out["variants"]["broken"]["stages"]}
    assert broken == {"merge": "ran", "data": "failed", "dpo": "skipped", "heldout": "skipped", "publish": "skipped"}
    assert "line 2: malformed JSON" in out["variants"]["broken"]["error"]
    assert result.stderr.strip().splitlines()[-1].startswith("1 of 2 variants failed: broken: stage data: ")
    assert (family_dir / "dist" / "good").is_dir() and not (family_dir / "dist" / "broken").exists()


def check_report_in_a_browser(report: Path, variants: int, curves: int) -> None:
    """Load the page in headless Chromium: the table and every plot rendered, the script ran, no console error."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium here (.ci/run installs Debian's chromium)")
    profile = report.parent / "chromium-profile"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    dom = done.stdout
    assert 'data-ready="yes"' in dom, "the page's script did not run"
    assert dom.count("<tr>") == 1 + variants  # the header and a row per variant
    assert dom.count('class="series"') == curves * variants and dom.count('class="bar"') >= variants
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if "error" in line.lower() or "Uncaught" in line], console

"""Experiment trackers through trl's report_to: each variant's training is a run named recipe/variant, grouped by
recipe, with its configuration, its training metrics and its eval stage's results in the same run (trackio and
tensorboard, both real and local); the model card names the run; a tracker that is not installed is one line
before any work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = "tiny:llama?layers=2&hidden=32&intermediate=64&heads=2&kv_heads=1&seed=1"

RECIPE = f"""
[models]
base = "{TINY}"

[stages.data]
kind = "dataset"
sources = [{{ adapter = "orca", path = "data/tiny_orca.jsonl", max_rows = 24 }}]
tokenizer = "base"
max_length = 256
test_size = 8

[stages.dpo]
kind = "train"
model = "base"
dataset = "data"
lora = {{ r = 4, alpha = 8, dropout = 0.0 }}
args = {{ learning_rate = 1e-3, beta = 0.1, per_device_train_batch_size = 4, max_steps = 2, seed = 1, report_to = ["trackio", "tensorboard"] }}

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

[variants.a]

[variants.b]
"stages.dpo.args.learning_rate" = 5e-4
"""

READ_TRACKIO = """
import json, sys
from trackio.sqlite_storage import SQLiteStorage as S
project = sys.argv[1]
runs = S.get_runs(project)
out = {run: {"config": S.get_run_config(project, run), "logs": S.get_logs(project, run)} for run in runs}
print(json.dumps(out, default=str))
"""


@pytest.mark.slow
def test_each_variant_is_a_tracked_run_with_its_config_metrics_and_evals(tmp_path, sakura):
    pytest.importorskip("trackio")
    pytest.importorskip("tensorboard")
    shutil.copytree(REPO / "recipes" / "data", tmp_path / "data")
    (tmp_path / "fam.toml").write_text(RECIPE)
    env = {"TRACKIO_DIR": str(tmp_path / "trackio")}
    done = sakura("run", tmp_path / "fam.toml", "--json", "-q", cwd=tmp_path, env=env, check=0)
    result = json.loads(done.stdout)  # the trackers' banners went to stderr: stdout is the JSON alone
    assert "Trackio" in done.stderr
    dpo = {v: {s["name"]: s for s in r["stages"]}["dpo"] for v, r in result["variants"].items()}
    assert dpo["a"]["metrics"]["tracking"]["run_name"] == "fam/a" and dpo["a"]["metrics"]["tracking"]["group"] == "fam"

    read = subprocess.run([sys.executable, "-c", READ_TRACKIO, "fam"], capture_output=True, text=True,
                          env={**__import__("os").environ, **env}, check=True)
    runs = json.loads(read.stdout)
    assert set(runs) == {"fam/a", "fam/b"}  # one project per recipe, a run per variant
    for variant, lr in (("a", 1e-3), ("b", 5e-4)):
        run = runs[f"fam/{variant}"]
        assert run["config"]["learning_rate"] == lr and run["config"]["beta"] == 0.1  # the resolved DPOConfig
        losses = [log["train/loss"] for log in run["logs"] if "train/loss" in log]
        assert len(losses) == 2 and losses[-1] == pytest.approx(dpo[variant]["metrics"]["loss"])
        evals = [log for log in run["logs"] if "eval/heldout/preference/reward_accuracy" in log]
        assert len(evals) == 1 and evals[0]["step"] == 2  # logged at the training's last step

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for variant in ("a", "b"):
        (folder,) = (tmp_path / ".sakura" / "tensorboard" / "fam" / variant).iterdir()
        events = EventAccumulator(str(folder))
        events.Reload()
        tags = set(events.Tags()["scalars"])
        assert {"train/loss", "eval/heldout/preference/reward_accuracy"} <= tags, tags
        assert (Path(dpo[variant]["artifact"]) / "tensorboard").is_dir()  # the events travel with the model

    card = (tmp_path / "dist" / "a" / "README.md").read_text()
    assert "Training run: `fam/a` (trackio, tensorboard; runs of this recipe are grouped under `fam`)." in card


def test_a_tracker_that_is_not_installed_is_one_line_before_any_work(tmp_path, sakura):
    pytest.importorskip("trackio")  # the recipe is otherwise valid
    if __import__("importlib").util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    shutil.copytree(REPO / "recipes" / "data", tmp_path / "data")
    (tmp_path / "fam.toml").write_text(RECIPE)
    done = sakura("run", tmp_path / "fam.toml", "-s", 'stages.dpo.args.report_to=["wandb"]', cwd=tmp_path, check=2)
    assert done.stderr.strip() == ("fam.toml: variants.a.stages.dpo.args.report_to: asks for wandb, which is not "
                                   "installed (pip install wandb)")
    assert not (tmp_path / ".sakura").exists()

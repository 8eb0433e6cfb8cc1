"""``sakura run --executor ray``: a tiny family on a local Ray instance (2 CPUs) gives the local executor's
fingerprints and artifacts with each shared stage run once; cached stages are never scheduled; a failing
variant leaves the others done; a worker that dies mid-stage is retried and leaves no artifact behind; a
node that cannot see the store says so; Ctrl-C kills the running task."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parent.parent
TINY = "tiny:llama?layers=2&hidden=32&intermediate=64&heads=2&kv_heads=1"

FAMILY = f"""
name = "ray-family"

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
sources = [{{ adapter = "orca", path = "data/tiny_orca.jsonl", max_rows = 24 }}]
tokenizer = "merge"
max_length = 256
seed = 3

[stages.dpo]
kind = "train"
trainer = "dpo"
model = "merge"
dataset = "data"
lora = {{ r = 4, alpha = 8 }}
args = {{ learning_rate = 5e-5, beta = 0.1, per_device_train_batch_size = 4, max_steps = 2, max_length = 256, seed = 1 }}

[variants.fast]
"stages.dpo.args.learning_rate" = 1e-4

[variants.slow]
"stages.dpo.args.learning_rate" = 1e-6

[variants.nosys]
"stages.data.sources" = [{{ adapter = "orca", path = "data/tiny_orca.jsonl", max_rows = 24, options = {{ system = false }} }}]
"""


def sakura(recipe: Path, *args: str, store: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sakura_core", "run", str(recipe), "--store", str(store), *args],
                          capture_output=True, text=True, cwd=recipe.parent, timeout=900)


def write_family(folder: Path, extra: str = "") -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "recipes" / "data" / "tiny_orca.jsonl", folder / "data")
    recipe = folder / "family.toml"
    recipe.write_text(FAMILY + textwrap.dedent(extra))
    return recipe


def stages(result: dict) -> dict[tuple[str, str], dict]:
    return {(variant, s["name"]): s for variant, run in result["variants"].items() for s in run["stages"]}


def manifest(stage: dict) -> dict:
    return json.loads((Path(stage["artifact"]) / "sakura-artifact.json").read_text())


def rows(stage: dict) -> dict[str, bytes]:
    folder = Path(stage["artifact"])
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.arrow"))}


def test_ray_runs_the_family_as_the_local_executor_does(tmp_path):
    recipe = write_family(tmp_path)
    on_ray = sakura(recipe, "--executor", "ray", "--json", store=tmp_path / "ray-store")
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert "submitted to Ray" in on_ray.stderr
    local = sakura(recipe, "--json", store=tmp_path / "local-store")
    assert local.returncode == 0, local.stderr[-3000:]
    ray_stages, local_stages = stages(json.loads(on_ray.stdout)), stages(json.loads(local.stdout))

    # the same stages with the same fingerprints; the merge and the data are the very same bytes (the rows: the
    # datasets library's state.json holds a random id of each build)
    assert {k: s["fingerprint"] for k, s in ray_stages.items()} == {k: s["fingerprint"] for k, s in local_stages.items()}
    assert manifest(ray_stages["fast", "merge"])["digest"] == manifest(local_stages["fast", "merge"])["digest"]
    for key in [("fast", "data"), ("nosys", "data")]:
        assert rows(ray_stages[key]) == rows(local_stages[key]), key

    # each distinct stage built once: one merge, two datasets, three trainings in the store
    built = [p for p in (tmp_path / "ray-store" / "artifacts").iterdir() if (p / "sakura-artifact.json").is_file()]
    kinds = sorted(json.loads((p / "sakura-artifact.json").read_text())["kind"] for p in built)
    assert kinds == sorted(json.loads((p / "sakura-artifact.json").read_text())["kind"]
                           for p in (tmp_path / "local-store" / "artifacts").iterdir() if (p / "sakura-artifact.json").is_file())
    assert kinds.count("merge") == 1 and kinds.count("dataset") == 2 and kinds.count("train") == 3

    # run again: everything is cached, and nothing is submitted to Ray
    again = sakura(recipe, "--executor", "ray", "--json", store=tmp_path / "ray-store")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {s["status"] for s in stages(json.loads(again.stdout)).values()} == {"cached"}
    assert "submitted to Ray" not in again.stderr


KINDS = '''
"""Stage kinds whose work goes wrong: "flaky" dies the way a lost node does (SIGKILL in the middle of its work)
on its first attempt; "sleeper" writes its process id to its marker and works for ten minutes."""
import os, signal, time
from pathlib import Path
from sakura_core import hookimpl
from sakura_core.options import Options
from sakura_core.stage import StageKind


class MarkerOptions(Options):
    model: str
    marker: str


class MarkerKind(StageKind):
    Options = MarkerOptions
    produces = "model"

    def references(self, options):
        return {"model": options.model}

    def gpus(self, options):
        return 0


class Flaky(MarkerKind):
    def run(self, ctx):
        marker = Path(ctx.options.marker)
        if not marker.exists():
            (ctx.output_dir / "first-attempt").write_text("half-written")
            marker.write_text("died once")
            os.kill(os.getpid(), signal.SIGKILL)
        (ctx.output_dir / "done").write_text("second attempt")
        return {"attempt": 2}


class Sleeper(MarkerKind):
    def run(self, ctx):
        (ctx.output_dir / "partial").write_text("unfinished")
        Path(ctx.options.marker).write_text(str(os.getpid()))
        time.sleep(600)
        return {}


@hookimpl
def sakura_register_stage_kinds(register):
    register("flaky", Flaky())
    register("sleeper", Sleeper())
'''


def test_a_failing_variant_and_a_dying_worker(tmp_path):
    """A variant whose data cannot be read fails alone (its training is skipped, the others train); a stage whose
    worker is SIGKILLed is started again by Ray and its killed attempt leaves nothing in its artifact."""
    (tmp_path / "kinds.py").write_text(KINDS)
    recipe = write_family(tmp_path, """
        [variants.broken]
        "stages.data.sources" = [{ adapter = "orca", path = "data/broken.jsonl" }]
        """)
    text = recipe.read_text().replace('name = "ray-family"\n', 'name = "ray-family"\nplugins = ["kinds.py"]\n', 1)
    text = text.replace("[variants.fast]", f'[stages.flaky]\nkind = "flaky"\nmodel = "merge"\nmarker = "{tmp_path / "died"}"\n\n[variants.fast]')
    recipe.write_text(text)
    (tmp_path / "data" / "broken.jsonl").write_text('{"system": "", "question": "q", "chosen": "a", "rejected": "b"}\n{not json\n')
    done = sakura(recipe, "--executor", "ray", "--json", "--variant", "fast", "--variant", "broken", store=tmp_path / "store")
    assert done.returncode != 0
    result = json.loads(done.stdout)
    assert result["variants"]["fast"]["ok"] is True
    broken = {s["name"]: s for s in result["variants"]["broken"]["stages"]}
    assert broken["data"]["status"] == "failed" and broken["dpo"]["status"] == "skipped"
    assert done.stderr.strip().splitlines()[-1].startswith("1 of 2 variants failed: broken: stage data: "), done.stderr[-2000:]

    flaky = next(s for s in result["variants"]["fast"]["stages"] if s["name"] == "flaky")
    assert flaky["status"] == "ran" and flaky["metrics"]["attempt"] == 2 and (tmp_path / "died").is_file()
    # the artifact is the second attempt's alone: the killed one's files stayed in its tmp/ entry
    assert sorted(p.name for p in Path(flaky["artifact"]).iterdir()) == ["done", "sakura-artifact.json"]


def test_a_node_that_cannot_see_the_store_says_so(tmp_path):
    from sakura_executors.ray_executor import _run_on_worker

    from sakura_core.executor import StageJob

    job = StageJob(str(tmp_path / "r.toml"), (), None, "", "merge", "f" * 64, False, "merge")
    outcome, host = _run_on_worker(job, str(tmp_path / "store" / "executors" / "ray-gone"))
    assert outcome.status == "failed" and outcome.exit_code == 2
    assert outcome.error.startswith(f"the store {tmp_path / 'store'} is not visible from node {host}")


@pytest.mark.parametrize("args, message", [
    (["--executor", "ray", "-x", "retries=-1"], "-x retries: input should be greater than or equal to 0 (got -1)"),
    (["--executor", "ray", "-x", "retry=2"], "-x retry: unknown option (did you mean retries?)"),
    (["--executor", "ray", "-x", "retries"], "-x 'retries': expected KEY=VALUE"),
    (["--executor", "rya"], "--executor: unknown executor 'rya' (did you mean ray?) (known: local, ray)"),
    (["--address", "10.0.0.1:6379"], "--address: executor local takes no address"),
])
def test_executor_mistakes_are_one_line(tmp_path, args, message):
    recipe = write_family(tmp_path)
    done = sakura(recipe, *args, store=tmp_path / "store")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(message), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "store" / "artifacts").exists()


def test_ctrl_c_cancels_the_running_stage_on_ray(tmp_path):
    """Ctrl-C in the driver: exit 130 with the one-line 'interrupted', the task's worker process killed (nothing
    keeps running on the cluster), and no artifact of the unfinished stage in the store."""
    import os
    import signal
    import time

    from sakura_core.cli import INTERRUPTED

    (tmp_path / "kinds.py").write_text(KINDS)
    pid_file = tmp_path / "worker.pid"
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'name = "interrupt"\nplugins = ["kinds.py"]\n[models]\nm = "{TINY}&seed=1"\n\n'
                      f'[stages.sleep]\nkind = "sleeper"\nmodel = "m"\nmarker = "{pid_file}"\n')
    store = tmp_path / "store"
    driver = subprocess.Popen([sys.executable, "-m", "sakura_core", "run", str(recipe), "--store", str(store),
                               "--executor", "ray"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not pid_file.is_file() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert pid_file.is_file(), driver.communicate(timeout=60)
        worker = int(pid_file.read_text())
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == INTERRUPTED
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail(f"the stage's Ray worker {worker} still runs after the driver was interrupted")
    artifacts = store / "artifacts"
    kinds = [json.loads((p / "sakura-artifact.json").read_text())["kind"] for p in artifacts.iterdir()
             if (p / "sakura-artifact.json").is_file()] if artifacts.is_dir() else []
    assert "sleeper" not in kinds

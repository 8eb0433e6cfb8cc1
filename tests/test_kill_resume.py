"""A run SIGKILLed in the middle of a stage leaves nothing a later run accepts, and the re-run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sakura_core.store import MANIFEST

RECIPE = """
plugins = ["echo_plugin.py"]
[stages.first]
kind = "echo"
text = "done before the kill"
[stages.slow]
kind = "slow"
reads = ["first"]
chunks = 40
pause = 0.05
started_marker = "{marker}"
[stages.last]
kind = "echo"
reads = ["slow"]
"""


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): p.read_text()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def test_sigkill_mid_stage_then_rerun_matches_uninterrupted_run(write_recipe, sakura, tmp_path):
    marker = tmp_path / "started"
    path = write_recipe(RECIPE.format(marker=marker))
    store = tmp_path / ".sakura"

    proc = subprocess.Popen(
        [sys.executable, "-m", "sakura_core", "run", str(path), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else "slow stage never started"
    # let it write some chunks, then kill it without any chance to clean up
    while len(list((store / "tmp").rglob("chunk*.txt"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    complete = [p.parent.name for p in (store / "artifacts").glob(f"*/{MANIFEST}")]
    assert len(complete) == 1  # only "first" finished; the half-written "slow" is not an artifact
    assert list((store / "tmp").iterdir()), "the killed stage's partial output should be in tmp/"

    marker.unlink()
    resumed = json.loads(sakura("run", path, "--json", check=0).stdout)
    assert [s["status"] for s in resumed["stages"]] == ["cached", "ran", "ran"]

    clean_store = tmp_path / "clean-store"
    marker.unlink()
    clean = json.loads(sakura("run", path, "--json", "--store", clean_store, check=0).stdout)
    for killed_then_resumed, uninterrupted in zip(resumed["stages"], clean["stages"]):
        assert killed_then_resumed["fingerprint"] == uninterrupted["fingerprint"]
        assert tree_digest(Path(killed_then_resumed["artifact"])) == tree_digest(Path(uninterrupted["artifact"]))
    assert "removed 1 entries" in sakura("cache", "gc", path, check=0).stdout  # the dead run's tmp entry


def test_ctrl_c_mid_stage_says_so_in_one_line_and_keeps_what_finished(write_recipe, sakura, tmp_path):
    """Ctrl-C (SIGINT) during a stage: exit 130, the last line says what was kept, the finished stage is an
    artifact and the interrupted one is not; the next run starts from the interrupted stage."""
    from sakura_core.cli import INTERRUPTED

    marker = tmp_path / "started"
    path = write_recipe(RECIPE.format(marker=marker).replace("chunks = 40\npause = 0.05", "chunks = 200\npause = 0.02"))
    store = tmp_path / ".sakura"
    proc = subprocess.Popen([sys.executable, "-m", "sakura_core", "run", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == INTERRUPTED
    assert "Traceback" not in stderr
    assert len(list((store / "artifacts").glob(f"*/{MANIFEST}"))) == 1  # "first" only

    marker.unlink()
    resumed = json.loads(sakura("run", path, "--json", check=0).stdout)
    assert [s["status"] for s in resumed["stages"]] == ["cached", "ran", "ran"]

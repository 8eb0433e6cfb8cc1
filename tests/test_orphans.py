"""No orphans: the dataset stage's map workers die with a SIGKILLed `sakura run`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# An adapter slow enough that the workers are still mapping when the run is killed.
SLOW_ADAPTER = '''
import time
from sakura_core import hookimpl
from sakura_data import Adapter, preference


class Slow(Adapter):
    columns = ("question", "chosen", "rejected")

    def run(self, row, options):
        time.sleep(0.5)
        yield preference(row["question"], row["chosen"], row["rejected"])


@hookimpl
def sakura_register_dataset_adapters(register):
    register("slow", Slow())
'''

RECIPE = '''
name = "orphans"
plugins = ["slow.py"]

[stages.data]
kind = "dataset"
sources = [{ adapter = "slow", path = "data/tiny_orca.jsonl" }]
num_proc = 2
batch_size = 4
'''


def children(pid: int) -> list[int]:
    found = []
    for task in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = task.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # the field after the state is the parent's pid
            found.append(int(task.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_map_workers_die_with_a_sigkilled_run(tmp_path):
    (tmp_path / "data").mkdir()
    shutil.copy(REPO / "recipes" / "data" / "tiny_orca.jsonl", tmp_path / "data")
    (tmp_path / "slow.py").write_text(SLOW_ADAPTER)
    (tmp_path / "r.toml").write_text(RECIPE)
    run = subprocess.Popen([sys.executable, "-m", "sakura_core", "run", "r.toml", "-q"], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            assert run.poll() is None, "the run ended before its map workers started"
            workers = children(run.pid)
            time.sleep(0.1)
        assert len(workers) >= 2, "no map workers seen"
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(alive(w) for w in workers), f"map workers {workers} outlived the killed run"
    finally:
        if run.poll() is None:
            run.kill()

"""Many processes on one store: real concurrent ``sakura run``s build each artifact once, a run waiting for
another's build uses it, ``cache gc`` during a run removes nothing the run needs, and a lock holder killed by
SIGKILL blocks nobody."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sakura_core.locks import Locks
from sakura_core.store import MANIFEST

TINY = "tiny:llama?layers=2&hidden=32&intermediate=64&heads=2&kv_heads=1"

RECIPE = """
plugins = ["echo_plugin.py"]
[stages.first]
kind = "echo"
text = "{text}"
[stages.slow]
kind = "slow"
reads = ["first"]
chunks = 5
pause = 0.01
started_marker = "{marker}"
wait_for = "{go}"
[stages.last]
kind = "echo"
reads = ["slow"]
"""


def start(path: Path, err: Path, *args: str) -> subprocess.Popen:
    """``sakura run PATH --json`` in the background; its progress lines go to ``err`` (read while it runs)."""
    return subprocess.Popen(
        [sys.executable, "-m", "sakura_core", "run", str(path), "--json", *args],
        stdout=subprocess.PIPE, stderr=err.open("w"), text=True,
    )


def finish(proc: subprocess.Popen, err: Path, timeout: float = 300) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err.read_text()}"
    return json.loads(out)


def wait_until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def statuses(result: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in result["stages"]}


def test_two_runs_of_one_recipe_build_each_artifact_once(write_recipe, tmp_path):
    marker, go, counter = tmp_path / "started", tmp_path / "go", tmp_path / "counter"
    path = write_recipe(RECIPE.format(text="shared", marker=marker, go=go))
    os.environ["SAKURA_TEST_COUNTER"] = str(counter)  # every echo stage that runs appends its name
    try:
        first = start(path, tmp_path / "a.err")
        wait_until(marker.exists, "run A to start building 'slow'")
        second = start(path, tmp_path / "b.err")  # needs 'slow' while A holds its build lock
        wait_until(lambda: "slow: waiting for another run building it" in (tmp_path / "b.err").read_text(),
                   "run B to wait for A's build")
        go.touch()
        a, b = finish(first, tmp_path / "a.err"), finish(second, tmp_path / "b.err")
    finally:
        del os.environ["SAKURA_TEST_COUNTER"]
    assert statuses(a)["first"] == "ran" and statuses(a)["slow"] == "ran"
    assert statuses(b)["first"] == "cached" and statuses(b)["slow"] == "cached"  # waited, then used A's
    assert "slow: built by another run meanwhile: using it" in (tmp_path / "b.err").read_text()
    for stage in ("first", "slow", "last"):  # 'last' went to whichever got there first
        assert sorted([statuses(a)[stage], statuses(b)[stage]]) == ["cached", "ran"], stage
    assert sorted(counter.read_text().split()) == ["first", "last"]  # each echo stage ran once in all
    for x, y in zip(a["stages"], b["stages"]):
        assert x["artifact"] == y["artifact"] and (Path(x["artifact"]) / MANIFEST).is_file()
    assert not list((tmp_path / ".sakura" / "tmp").iterdir())


def test_gc_during_a_run_removes_nothing_the_run_needs(write_recipe, sakura, tmp_path):
    marker, go = tmp_path / "started", tmp_path / "go"
    other = write_recipe('plugins = ["echo_plugin.py"]\n[stages.only]\nkind = "echo"\ntext = "other"\n', name="other.toml")
    sakura("run", other, "-q", check=0)
    path = write_recipe(RECIPE.format(text="mine", marker=marker, go=go))
    store = tmp_path / ".sakura"
    (store / "tmp" / "deadbeef.999999999.0").mkdir(parents=True)  # a dead run's leftovers: gc does remove these
    run = start(path, tmp_path / "run.err")
    wait_until(marker.exists, "the run to start building 'slow'")
    building = [p for p in (store / "tmp").iterdir() if not p.name.startswith("deadbeef")]
    assert len(building) == 1
    firsts = [p for p in (store / "artifacts").iterdir()
              if json.loads((p / MANIFEST).read_text()).get("stage") == "first"]
    assert len(firsts) == 1
    first = firsts[0]

    # keep only other.toml's artifacts: everything of the live run is "unused" by that measure
    gc = sakura("cache", "gc", other, check=0)
    assert "removed 1 entries" in gc.stdout and "in use by a live run" in gc.stdout, gc.stdout
    assert (first / MANIFEST).is_file() and building[0].is_dir()  # the run's input and its half-built output
    assert not (store / "tmp" / "deadbeef.999999999.0").exists()

    go.touch()
    result = finish(run, tmp_path / "run.err")
    assert statuses(result) == {"first": "ran", "slow": "ran", "last": "ran"}
    # the run is over: now gc may remove what it made
    after = sakura("cache", "gc", other, check=0)
    assert "removed 3 entries" in after.stdout, after.stdout
    assert not first.exists()


def test_two_recipes_sharing_a_merge_build_it_once(write_recipe, tmp_path):
    merge = textwrap.dedent(f"""
        plugins = ["echo_plugin.py"]
        [models]
        a = "{TINY}&seed=1"
        b = "{TINY}&seed=2"
        [stages.merge]
        kind = "merge"
        merge_method = "slerp"
        base_model = "a"
        models = [{{ model = "a" }}, {{ model = "b" }}]
        parameters = {{ t = 0.5 }}
        dtype = "float32"
        [stages.after]
        kind = "echo"
        reads = ["merge"]
        """)
    one = write_recipe(merge + 'text = "one"\n', name="one.toml")
    two = write_recipe(merge + 'text = "two"\n', name="two.toml")
    runs = [start(one, tmp_path / "one.err"), start(two, tmp_path / "two.err")]  # at once
    one_result, two_result = finish(runs[0], tmp_path / "one.err"), finish(runs[1], tmp_path / "two.err")
    merges = [statuses(one_result)["merge"], statuses(two_result)["merge"]]
    assert sorted(merges) == ["cached", "ran"], merges
    assert one_result["stages"][0]["artifact"] == two_result["stages"][0]["artifact"]
    assert statuses(one_result)["after"] == statuses(two_result)["after"] == "ran"  # their own stages
    assert len(list((tmp_path / ".sakura" / "artifacts").iterdir())) == 2 + 1 + 2  # two tiny models, merge, two 'after'


HOLD = """
import sys, time
from pathlib import Path
from sakura_core.locks import Locks
locks = Locks(Path(sys.argv[1]))
locks.use("abc")
with locks.building("abc"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_killed_lock_holder_blocks_nobody(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        locks = Locks(tmp_path)
        with locks.exclusive_now("abc", "build") as free:
            assert not free  # a live holder: nobody else builds it, gc leaves its tmp/ and work/
        with locks.exclusive_now("abc", "use") as free:
            assert not free  # a live user: gc leaves the artifact
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # no cleanup: the OS released both locks with the process (the lock files stay, unlocked)
    assert (tmp_path / "locks" / "abc.build").exists()
    with locks.exclusive_now("abc", "use") as free:
        assert free
    with locks.building("abc") as waited:
        assert waited is False


def test_two_runs_of_a_dataset_stage_at_once_both_succeed(tmp_path):
    """The hardening issue's crash: two runs on one store removed each other's dataset work files
    (FileNotFoundError). Now one builds under the lock and the other uses what it built."""
    import shutil

    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "data").mkdir()
    shutil.copy(repo / "recipes" / "data" / "tiny_orca.jsonl", tmp_path / "data")
    path = tmp_path / "data.toml"
    path.write_text(textwrap.dedent("""
        name = "both"
        [stages.data]
        kind = "dataset"
        sources = [{ adapter = "orca", path = "data/tiny_orca.jsonl" }]
        num_proc = 2
        batch_size = 8
        test_size = 8
        """))
    runs = [start(path, tmp_path / f"{name}.err") for name in ("a", "b")]
    results = [finish(run, tmp_path / f"{name}.err") for run, name in zip(runs, ("a", "b"))]
    assert sorted(statuses(r)["data"] for r in results) == ["cached", "ran"]
    assert {r["stages"][0]["artifact"] for r in results} == {results[0]["stages"][0]["artifact"]}

"""A full disk ends a run in one line naming where, with what the stage needs; nothing half-written is kept,
and a re-run once there is room completes. Needs a small tmpfs (root on Linux); skipped elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TINY = "tiny:llama?layers=2&hidden=64&intermediate=128&heads=2&kv_heads=1"
RECIPE = f"""
name = "full"

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
"""


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, grown later with ``grow()``."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=256m", str(mount)], check=True)

    try:
        yield mount, grow
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def sakura(recipe: Path, store: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sakura_core", "run", str(recipe), "--store", str(store), "-q"],
                          capture_output=True, text=True, cwd=recipe.parent, timeout=600)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs is Linux's")
def test_a_full_disk_is_one_line_and_a_rerun_with_room_completes(tmp_path, small_disk):
    mount, grow = small_disk
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    store = mount / "store"
    done = sakura(recipe, store)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert f"no space left on device at {store}" in lines[0] and "free some space" in lines[0], lines[0]
    # the generated input models fitted; no merge artifact, complete or not, and no tmp/ entry is left
    kinds = [json.loads(m.read_text()).get("kind") for m in store.glob("artifacts/*/sakura-artifact.json")]
    assert "merge" not in kinds and len(kinds) == len(list(store.glob("artifacts/*"))), kinds
    assert not list(store.glob("tmp/*"))

    grow()
    again = sakura(recipe, store)
    assert again.returncode == 0, again.stderr

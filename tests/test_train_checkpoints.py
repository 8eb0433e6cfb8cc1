"""A re-run resumes only from a complete checkpoint; the ones a killed run left half-written are dropped.

These build checkpoint directories by hand (the files transformers writes, in the order it writes them), so
they need no training; test_train.py resumes a real run past a half-written checkpoint.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from sakura_trl.checkpoints import incomplete_reason, newest_complete, resume_point


def safetensors_bytes() -> bytes:
    import numpy as np
    from safetensors.numpy import save

    return save({"w": np.zeros((4, 4), dtype=np.float32)})


def torch_pickle_bytes(tmp_path: Path) -> bytes:
    """A stand-in for optimizer.pt: torch's format is a zip whose central directory is written last."""
    path = tmp_path / "opt.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"x" * 100)
    return path.read_bytes()


def write_checkpoint(folder: Path, step: int, tmp_path: Path, *, weights: str = "adapter_model.safetensors") -> Path:
    """A complete checkpoint, in transformers' order: weights, optimizer/scheduler/RNG, trainer state last."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / weights).write_bytes(safetensors_bytes() if weights.endswith(".safetensors") else torch_pickle_bytes(tmp_path))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (path / name).write_bytes(torch_pickle_bytes(tmp_path))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return path


def truncate(path: Path, keep: int = 20) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# (what a kill or a full disk left behind, how to make it from a complete checkpoint, the reason given)
DAMAGE = [
    ("killed before the trainer state", lambda c: (c / "trainer_state.json").unlink(), "no trainer_state.json"),
    ("trainer state half-written", lambda c: truncate(c / "trainer_state.json", 10), "trainer_state.json is truncated"),
    ("weights half-written", lambda c: truncate(c / "adapter_model.safetensors", 100), "adapter_model.safetensors is truncated"),
    ("weights header cut", lambda c: truncate(c / "adapter_model.safetensors", 12), "adapter_model.safetensors is truncated"),
    ("optimizer half-written", lambda c: truncate(c / "optimizer.pt", 30), "optimizer.pt is truncated"),
    ("no weights at all", lambda c: (c / "adapter_model.safetensors").unlink(), "no model weights"),
]


@pytest.mark.parametrize("what, damage, reason", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_an_incomplete_checkpoint_is_dropped_and_the_one_before_resumed(tmp_path, what, damage, reason):
    folder = tmp_path / "checkpoints"
    first = write_checkpoint(folder, 1, tmp_path)
    second = write_checkpoint(folder, 2, tmp_path)
    assert incomplete_reason(second) is None
    damage(second)
    assert incomplete_reason(second) == reason
    assert newest_complete(folder) == first  # looking removes nothing
    assert second.exists()

    lines: list[str] = []
    assert resume_point(folder, lines.append) == first
    assert not second.exists() and first.exists()
    assert lines == [f"dropping incomplete checkpoint-2 ({reason}): a run stopped while writing it"]


def test_numeric_order_and_no_checkpoint_at_all(tmp_path):
    folder = tmp_path / "checkpoints"
    assert resume_point(folder, print) is None  # no directory yet: the first run
    for step in (2, 10, 9):
        write_checkpoint(folder, step, tmp_path)
    (folder / "checkpoint-11-tmp").mkdir()  # not a checkpoint name: left alone
    assert resume_point(folder, print).name == "checkpoint-10"  # 10 after 9, not after "checkpoint-2"
    assert (folder / "checkpoint-11-tmp").exists()


def test_the_only_checkpoint_incomplete_means_start_over(tmp_path):
    folder = tmp_path / "checkpoints"
    (write_checkpoint(folder, 3, tmp_path) / "trainer_state.json").unlink()
    lines: list[str] = []
    assert resume_point(folder, lines.append) is None
    assert not list(folder.iterdir()) and len(lines) == 1


def test_sharded_and_pickle_weights(tmp_path):
    folder = tmp_path / "checkpoints"
    pickled = write_checkpoint(folder, 1, tmp_path, weights="pytorch_model.bin")
    assert incomplete_reason(pickled) is None
    truncate(pickled / "pytorch_model.bin", 50)
    assert incomplete_reason(pickled) == "pytorch_model.bin is truncated"

    sharded = write_checkpoint(folder, 2, tmp_path, weights="model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert incomplete_reason(sharded) == "model-00002-of-00002.safetensors is missing"  # killed between shards
    (sharded / "model-00002-of-00002.safetensors").write_bytes(safetensors_bytes())
    assert incomplete_reason(sharded) is None

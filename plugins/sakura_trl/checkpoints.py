"""Which checkpoint a re-run resumes from: the newest *complete* one.

transformers writes ``checkpoint-N`` in place (weights, then optimizer, scheduler and RNG state, then
``trainer_state.json`` last) and its ``get_last_checkpoint`` takes the newest directory whatever it holds. A run
killed (or out of disk) while writing one leaves a directory every later run tries to resume from and fails
on, for good. Here a checkpoint counts only when its trainer state parses and its weights are whole; the
incomplete ones are removed, with a line, so the run resumes from the one before (or starts over).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

_NAME = re.compile(r"^checkpoint-(\d+)$")

# The weight files transformers' Trainer._load_from_checkpoint accepts (an adapter's with LoRA).
_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# FSDP and DeepSpeed keep their own sharded state in a directory; its presence is all we can check cheaply.
_SHARDED_DIRS = ("pytorch_model_fsdp", "global_step")


def checkpoints(folder: Path) -> list[Path]:
    """``checkpoint-N`` directories in ``folder``, newest (highest N) first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def incomplete_reason(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, or None when it is complete."""
    state = checkpoint / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError):
        return "trainer_state.json is truncated"
    weights = [checkpoint / name for name in _WEIGHTS if (checkpoint / name).is_file()]
    for index in _INDEXES:
        if (checkpoint / index).is_file():
            try:
                shards = set(json.loads((checkpoint / index).read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"{index} is unreadable"
            weights += [checkpoint / shard for shard in sorted(shards)]
    if not weights and not any(p.name.startswith(_SHARDED_DIRS) for p in checkpoint.iterdir()):
        return "no model weights"
    # The optimizer, scheduler and RNG state are torch pickles: zip files whose directory is written last.
    for path in [*weights, *checkpoint.glob("*.pt"), *checkpoint.glob("*.pth")]:
        reason = _damage(path)
        if reason:
            return f"{path.name} {reason}"
    return None


def _damage(path: Path) -> str | None:
    if not path.is_file():
        return "is missing"
    if path.suffix == ".safetensors":
        return _safetensors_damage(path)
    if path.suffix in (".bin", ".pt", ".pth") and not zipfile.is_zipfile(path):
        return "is truncated"
    return None


def _safetensors_damage(path: Path) -> str | None:
    """A safetensors file is whole when its header parses and its data ends where the header says."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if 8 + length > size:
                return "is truncated"
            header = json.loads(f.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError):
        return "has an unreadable header"
    return None if 8 + length + end == size else "is truncated"


def newest_complete(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder`` (nothing is removed)."""
    return next((p for p in checkpoints(folder) if incomplete_reason(p) is None), None)


def resume_point(folder: Path, log: Callable[[str], None]) -> Path | None:
    """The checkpoint a run resumes from, after removing (and logging) every incomplete one in ``folder``."""
    found = None
    for checkpoint in checkpoints(folder):
        reason = incomplete_reason(checkpoint)
        if reason is None:
            found = found or checkpoint
            continue
        log(f"dropping incomplete {checkpoint.name} ({reason}): a run stopped while writing it")
        # Every rank of a launched run looks at the same directory: another may have removed it already.
        shutil.rmtree(checkpoint, ignore_errors=True)
    return found

"""A full disk, said in one line.

A stage that runs out of space fails deep inside a library (safetensors, pyarrow, torch's checkpoint writer),
often wrapped in that library's own error type. The engine turns any such failure into one line naming the
filesystem that filled up, its free space and what the stage needs by the plan's estimate; the stage's
``tmp/`` entry is removed as for any failure, and its work area (checkpoints) is kept for the re-run.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

NO_SPACE = "No space left on device"


def no_space(exc: BaseException) -> BaseException | None:
    """The error in ``exc``'s chain that says the disk is full, or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return current
        if NO_SPACE in str(current) or "Disk quota exceeded" in str(current):
            return current
        current = current.__cause__ or current.__context__
    return None


def describe(stage: str, found: BaseException, store_root: Path, needs: int | None) -> str:
    """``stage STAGE: no space left on device at PATH (FREE free; the stage needs about N): ...``"""
    from sakura_core.estimate import human

    filename = getattr(found, "filename", None)
    where = Path(filename) if filename else store_root
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = f"; the stage needs about {human(needs)}" if needs else ""
    return (f"stage {stage}: no space left on device at {where} ({human(free)} free{need}): free some space "
            "(`sakura cache gc` removes what no recipe uses) and run again; nothing half-written was kept")

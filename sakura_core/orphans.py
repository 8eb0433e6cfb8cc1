"""Worker processes die with the process that started them, even when it is SIGKILLed.

A forked map worker or a launched trainer would otherwise outlive a killed ``sakura run`` (nothing is left to
stop it), keep a CPU or a GPU busy and write into the store's work area. On Linux, ``prctl(PR_SET_PDEATHSIG)``
has the kernel send the child SIGKILL when its parent dies; elsewhere this does nothing (daemonic workers and
the launcher's own clean-up still cover a parent that exits normally).
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """Call in the child: SIGKILL it when its parent dies. ``parent``: the parent's pid as the parent saw it
    before starting the child, to catch a parent that died before this call."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return
    if parent is not None and os.getppid() != parent:
        os._exit(1)  # orphaned already: the signal was asked for too late

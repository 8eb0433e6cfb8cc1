"""Locks on fingerprints, so that many processes (two ``sakura run``s, two recipes, a launcher's workers) can
share one store.

Two lock files per fingerprint under ``<store>/locks/``, each taken with ``flock``:

``<fingerprint>.build``
    held exclusively while the artifact is built: a second process that needs it waits, then finds it in
    the store instead of building it again. The artifact's ``tmp/`` and ``work/`` entries belong to the
    holder, so ``gc`` leaves them alone while it is held.
``<fingerprint>.use``
    held shared by every run that reads or builds the artifact, until the run ends; ``gc`` removes an
    artifact only when it can take this one exclusively without waiting.

The OS releases a ``flock`` when its holder dies (even by SIGKILL), so a crashed run leaves no lock to clean
by hand. Lock files are never deleted: deleting one while another process has it open would let two
processes each hold "the" lock on different files.

``flock`` locks belong to an open file: the same process opening a lock file twice would block on itself.
The table of held locks is therefore per process, and taking a lock this process already holds is a no-op.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

# lock file path -> [fd, how many holders in this process]; per process, see the module docstring
_build: dict[Path, list[int]] = {}
# lock file path -> fd of the shared "use" lock this process holds
_use: dict[Path, int] = {}
_pid = os.getpid()


def _forget_inherited() -> None:
    """A forked child shares its parent's lock fds but must not think it holds (or may release) them."""
    global _pid
    if os.getpid() != _pid:
        _build.clear()
        _use.clear()
        _pid = os.getpid()


class Locks:
    def __init__(self, root: Path):
        self.dir = Path(root) / "locks"

    def path(self, fingerprint: str, kind: str) -> Path:
        return self.dir / f"{fingerprint}.{kind}"

    def _open(self, fingerprint: str, kind: str) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        return os.open(self.path(fingerprint, kind), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)

    @contextlib.contextmanager
    def building(self, fingerprint: str, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
        """Hold the build lock on ``fingerprint``; yields whether another process held it first (this one
        waited, so the artifact may be in the store now: look again before building)."""
        _forget_inherited()
        path = self.path(fingerprint, "build")
        if path in _build:  # this process builds it already (a stage materializing a source it shares)
            _build[path][1] += 1
            try:
                yield False
            finally:
                _build[path][1] -= 1
            return
        fd = self._open(fingerprint, "build")
        waited = False
        try:
            if not _try(fd, fcntl.LOCK_EX):
                waited = True
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        _build[path] = [fd, 1]
        try:
            yield waited
        finally:
            del _build[path]
            os.close(fd)  # closing the only fd on the file releases the lock

    def use(self, fingerprint: str) -> None:
        """Mark ``fingerprint`` as used by this process until ``release``: ``gc`` will not remove it. Waits
        only while a ``gc`` is removing that very artifact (then the caller finds it gone and builds it)."""
        _forget_inherited()
        path = self.path(fingerprint, "use")
        if path in _use:
            return
        fd = self._open(fingerprint, "use")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        _use[path] = fd

    def release(self) -> None:
        """Drop every ``use`` lock this process holds on this store (a run has ended)."""
        _forget_inherited()
        for path in [p for p in _use if p.parent == self.dir]:
            os.close(_use.pop(path))

    @contextlib.contextmanager
    def exclusive_now(self, fingerprint: str, kind: str) -> Iterator[bool]:
        """Take the ``kind`` lock exclusively if nobody holds it, without waiting; yields whether it did
        (``gc`` removes an artifact only inside this)."""
        _forget_inherited()
        if self.path(fingerprint, kind) in (_use if kind == "use" else _build):
            yield False  # this very process uses it
            return
        fd = self._open(fingerprint, kind)
        try:
            yield _try(fd, fcntl.LOCK_EX)
        finally:
            os.close(fd)


def _try(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True

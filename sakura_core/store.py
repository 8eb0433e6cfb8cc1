"""Content-addressed artifact store.

Layout under the store root (``.sakura/`` beside the recipe by default)::

    artifacts/<fingerprint>/     complete artifacts; sakura-artifact.json is their manifest
    tmp/<fingerprint>.<pid>.<n>/ artifacts being written; renamed into artifacts/ only when complete
    work/<fingerprint>/          a stage's scratch space that survives a crash (checkpoints to resume from)
    runs/<time>-<recipe>.json    one summary per run
    locks/<fingerprint>.build    held while the artifact is built; .use: held by runs reading it (see locks.py)
    logs/                        tracebacks of unexpected failures
    published/<fingerprint>/     where an artifact was published (a Hub repo and commit), one file per destination

A directory rename is atomic, so an artifact is either wholly there or not at all: a run killed at any
moment (even SIGKILL) leaves at most a ``tmp/`` entry, which no later run accepts and ``gc`` removes.

Every manifest records ``digest``, a hash of the artifact's files (names and contents): a stage records
the digests of the artifacts it read, so a rebuilt input (``--force``) is told apart from the one an
output was made from, even under the same fingerprint.

Many processes may share a store (two runs, two recipes sharing a merge, a launcher's workers): an
artifact is built under its fingerprint's build lock, by one process at a time, and whoever waited for it
looks in the store again before building; ``gc`` removes nothing a live run uses or builds. See locks.py.

A publication record outlives ``gc``: it says what was published, which stays true. Later stages read it to
name the published repo as the parent of what descends from the artifact.

Stages may keep side artifacts of their own (the reference log-prob cache). A side artifact's manifest
lists ``kept_with``: the fingerprints it was computed from; ``gc`` keeps it while all of those are kept.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sakura_core.locks import Locks

MANIFEST = "sakura-artifact.json"
_counter = itertools.count()


@dataclass(frozen=True)
class Artifact:
    fingerprint: str
    path: Path
    manifest: dict[str, Any]

    @property
    def digest(self) -> str | None:
        """Hash of the artifact's content (None for an artifact written before digests were recorded)."""
        return self.manifest.get("digest")


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.locks = Locks(self.root)

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    def artifact_path(self, fingerprint: str) -> Path:
        return self.artifacts_dir / fingerprint

    def lookup(self, fingerprint: str) -> Artifact | None:
        """The complete artifact with this fingerprint, or None."""
        path = self.artifact_path(fingerprint)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None
        return Artifact(fingerprint, path, manifest)

    def work_dir(self, fingerprint: str) -> Path:
        path = self.root / "work" / fingerprint
        path.mkdir(parents=True, exist_ok=True)
        return path

    def begin(self, fingerprint: str) -> Path:
        """A fresh, empty directory to write an artifact into; ``commit`` publishes it."""
        tmp = self.root / "tmp" / f"{fingerprint}.{os.getpid()}.{next(_counter)}"
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, tmp: Path, fingerprint: str, manifest: dict[str, Any]) -> Artifact:
        """Write the manifest (with the content's digest), then atomically move ``tmp`` into place (replacing
        an older artifact)."""
        from sakura_core.hashing import content_digest

        manifest = {**manifest, "digest": content_digest(tmp, exclude=(MANIFEST,))}
        _write_json_atomic(tmp / MANIFEST, manifest)
        _fsync_dir(tmp)
        final = self.artifact_path(fingerprint)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # a forced re-run: move the old one aside first, then drop it
            trash = self.root / "tmp" / f"{fingerprint}.old.{os.getpid()}.{next(_counter)}"
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(final.parent)
        shutil.rmtree(self.root / "work" / fingerprint, ignore_errors=True)
        return Artifact(fingerprint, final, manifest)

    def abort(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    # -- housekeeping ---------------------------------------------------------------------------
    def list(self) -> list[Artifact]:
        if not self.artifacts_dir.is_dir():
            return []
        found = (self.lookup(p.name) for p in sorted(self.artifacts_dir.iterdir()))
        return [a for a in found if a is not None]

    def gc(self, keep: set[str] | None = None, skipped: list[Path] | None = None) -> list[Path]:
        """Remove unfinished writes and stale work areas; with ``keep``, also every artifact not in it.

        Never what a live process uses or builds, on this machine or another sharing the store: an artifact
        goes only under its ``use`` lock taken without waiting, a ``tmp/`` or ``work/`` entry only while
        nobody holds its build lock. What is left for that reason is appended to ``skipped``.
        """
        removed: list[Path] = []
        skipped = skipped if skipped is not None else []

        def remove(path: Path, fingerprint: str, lock: str, owned: bool = False) -> None:
            # held while removing: a process starting to build (or use) it meanwhile waits, then finds it gone
            with self.locks.exclusive_now(fingerprint, lock) as free:
                if not free or owned:
                    skipped.append(path)
                    return
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)

        tmp_dir = self.root / "tmp"
        for path in sorted(tmp_dir.glob("*")) if tmp_dir.is_dir() else []:
            # the pid check covers writers that take no build lock; the lock covers writers on other machines
            remove(path, path.name.split(".")[0], "build", owned=_owned_by_live_process(path.name))
        if keep is not None:
            for artifact in self.list():
                kept_with = artifact.manifest.get("kept_with") or []
                if artifact.fingerprint not in keep and not (kept_with and set(kept_with) <= keep):
                    remove(artifact.path, artifact.fingerprint, "use")
            work = self.root / "work"
            for path in sorted(work.iterdir()) if work.is_dir() else []:
                if path.name not in keep:
                    remove(path, path.name, "build")
        return removed

    # -- where artifacts went ----------------------------------------------------------------------
    def record_publication(self, fingerprint: str, destination: str, record: dict[str, Any]) -> Path:
        """Remember that artifact ``fingerprint`` was published to ``destination`` (``hub:<endpoint>/<repo>@<branch>``).

        One file per destination, replaced atomically: publishers running at once (two recipes sharing an
        artifact) never tear or lose each other's records, and the newest publication to a destination wins.
        """
        from sakura_core.hashing import hash_json

        folder = self.root / "published" / fingerprint
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hash_json(destination)[:16]}.json"
        _write_json_atomic(path, {**record, "destination": destination, "recorded": time.time()})
        return path

    def publications(self, fingerprint: str) -> list[dict[str, Any]]:
        """Every destination artifact ``fingerprint`` was published to, newest first."""
        found = []
        for path in sorted((self.root / "published" / fingerprint).glob("*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a record another process is replacing right now: it reappears whole
        return sorted(found, key=lambda r: -float(r.get("recorded") or 0))

    def record_run(self, recipe_name: str, summary: dict[str, Any]) -> Path | None:
        """Keep the run's summary under ``runs/``; None when it cannot be written (a full disk): the record is
        a convenience, and failing here would hide the run's own outcome."""
        runs = self.root / "runs"
        path = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{recipe_name}.json"
        try:
            runs.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(path, summary)
        except OSError:
            return None
        return path

    def log_path(self, name: str) -> Path:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}.log"


def _owned_by_live_process(entry: str) -> bool:
    parts = entry.split(".")
    try:
        pid = int(parts[-2])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json_atomic(path: Path, data: Any) -> None:
    # a name of this writer's own: two processes replacing the same file never write into one temporary file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_counter)}.part")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a kill: no .part file left behind
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

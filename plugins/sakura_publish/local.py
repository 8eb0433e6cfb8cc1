"""The ``local`` publisher: the model, its card, lineage and recipe, copied into a folder atomically."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError
from sakura_core.options import Options
from sakura_publish.publisher import LINEAGE_FILE, Bundle, Publisher, PublishEnv


class LocalOptions(Options):
    """``publisher = "local"``: the model files, card, lineage and recipe copied into a folder, written beside
    it and renamed into place, so the folder is never half-written."""

    path: str
    """Folder to publish into, relative to the recipe's directory (``~`` is expanded); each publish replaces
    the whole folder."""
    overwrite: bool = False
    """Allow replacing a non-empty folder that sakura did not write (one without ``sakura-lineage.json``); its
    contents are lost."""


class LocalPublisher(Publisher):
    Options = LocalOptions

    def target(self, options: LocalOptions, recipe_dir: Path) -> Path:
        path = Path(options.path).expanduser()
        return path if path.is_absolute() else (Path(recipe_dir) / path)

    def external_inputs(self, options: LocalOptions, recipe_dir: Path) -> dict[str, Any]:
        return {"target": os.path.abspath(self.target(options, recipe_dir))}

    def load_reference(self, options: LocalOptions, recipe_dir: Path) -> str:
        return os.path.abspath(self.target(options, recipe_dir))

    def run(self, bundle: Bundle, options: LocalOptions, env: PublishEnv) -> dict[str, Any]:
        target = Path(os.path.abspath(self.target(options, env.recipe_dir)))
        if target.exists() and not target.is_dir():
            raise StageError(f"cannot publish to {target}: it is a file")
        if target.is_dir() and any(target.iterdir()) and not (target / LINEAGE_FILE).is_file() and not options.overwrite:
            raise StageError(
                f"{target} is a non-empty folder that sakura did not write; choose another path or set overwrite = true"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(target)
        tmp = target.with_name(f".{target.name}.sakura-tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            for name, source in bundle.files.items():
                dest = tmp / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
            _swap_into_place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        env.log(f"published {len(bundle.files)} files to {target}")
        return {"path": str(target)}

    def outdated(self, record: dict[str, Any], options: LocalOptions) -> str | None:
        """The folder is gone, or holds another model now (its lineage file names another fingerprint)."""
        target = Path(record.get("path", ""))
        try:
            held = json.loads((target / LINEAGE_FILE).read_text())["model"]["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"{target} no longer holds the published model"
        if held != record.get("model_fingerprint"):
            return f"{target} holds another model now"
        return None


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing target is moved aside first and removed after."""
    if not target.exists():
        os.rename(tmp, target)
        return
    old = target.with_name(f".{target.name}.sakura-old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale(target: Path) -> None:
    """Leftovers of a publish killed midway (their process is gone)."""
    for prefix in (f".{target.name}.sakura-tmp-", f".{target.name}.sakura-old-"):
        for path in target.parent.glob(prefix + "*"):
            try:
                pid = int(path.name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if pid != os.getpid():
                try:
                    os.kill(pid, 0)
                    continue  # a live publish owns it
                except ProcessLookupError:
                    pass
                except PermissionError:
                    continue
            shutil.rmtree(path, ignore_errors=True)

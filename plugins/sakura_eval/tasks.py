"""The lm-eval tasks a recipe may name, known without importing lm-eval: validation stays fast.

lm-eval's ``TaskManager`` indexes every task YAML of the package on creation (about 15,000 tasks, groups
and tags: ~10 s), far too slow for ``sakura validate``. The names are kept in a snapshot instead,
``lm_eval_tasks.json.gz``, written from the installed lm-eval (``python -m sakura_eval.tasks``; a test checks
it against the installed version). Task files beside a recipe are read here: their task, group and tag
names, and the local data files they read, whose content goes into the fingerprint with theirs.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("lm_eval_tasks.json.gz")


@functools.lru_cache(maxsize=1)
def load_snapshot() -> dict[str, Any]:
    """``{"lm_eval": version, "names": [every task, group and tag name]}``."""
    with gzip.open(SNAPSHOT, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def known_names() -> frozenset[str]:
    return frozenset(load_snapshot()["names"])


class TaskFileError(ValueError):
    """A task file that cannot be read or parsed; the message says where."""


def _yaml_loader() -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        """lm-eval's YAML: ``!function module.name`` tags read as plain strings (nothing is imported)."""

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return Loader


def read_task_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())  # noqa: S506 - SafeLoader subclass
    except OSError as exc:
        raise TaskFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TaskFileError(f"{path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise TaskFileError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise TaskFileError(f"{path}: expected a task configuration (a mapping with a 'task' key)")
    return data


def defined_names(data: dict[str, Any]) -> list[str]:
    """The task, group and tag names a task file defines."""
    names = []
    for key in ("task", "group", "tag"):
        value = data.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                names.append(item)
    return names


def local_data_files(data: dict[str, Any], base: Path) -> list[Path]:
    """The local files a task file's ``dataset_kwargs.data_files`` names (relative to ``base``) that exist."""
    files = (data.get("dataset_kwargs") or {}).get("data_files") if isinstance(data.get("dataset_kwargs"), dict) else None
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(files)
    paths = [Path(f) if Path(f).is_absolute() else base / f for f in found]
    return [p for p in paths if p.is_file()]


def write_snapshot() -> dict[str, Any]:
    """Index the installed lm-eval's tasks (slow: seconds) and write the snapshot."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager()
    names = sorted(set(manager.all_tasks) | set(getattr(manager, "all_groups", [])) | set(getattr(manager, "all_tags", [])))
    data = {"lm_eval": lm_eval.__version__, "names": names}
    with gzip.open(SNAPSHOT, "wt", encoding="utf-8", compresslevel=9) as fh:
        json.dump(data, fh, separators=(",", ":"))
    return data


if __name__ == "__main__":  # pragma: no cover - maintenance: after upgrading lm-eval
    written = write_snapshot()
    print(f"{SNAPSHOT}: {len(written['names'])} names from lm-eval {written['lm_eval']}")

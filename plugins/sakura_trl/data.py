"""The dataset a train stage reads: a working copy of the dataset artifact, its splits and the columns rows need."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError


def working_copy(dataset_artifact: Path, work_dir: Path) -> Path:
    """A copy of the dataset in the stage's work area: trl's map() writes its cache files beside the data,
    and they must never land inside another stage's artifact. The copy is shared by every process of a
    launch and survives a crash, so a resumed run reuses the tokenized rows."""
    source = dataset_artifact / "dataset"
    if not source.is_dir():
        raise StageError(f"input {dataset_artifact.name} is not a dataset artifact (no dataset/ folder)")
    target = work_dir / "dataset"
    if not target.is_dir():
        partial = work_dir / "dataset.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial)
        os.rename(partial, target)
    return target


def load_splits(where: Path, options: Any, trainer_def: Any) -> tuple[Any, Any]:
    import datasets

    data = datasets.load_from_disk(str(where))
    if not isinstance(data, datasets.DatasetDict):
        data = datasets.DatasetDict({"train": data})
    if options.train_split not in data:
        raise StageError(f"dataset {options.dataset} has no split {options.train_split!r} (has {', '.join(data)})")
    train_ds = data[options.train_split]
    _check_columns(train_ds, options, trainer_def)
    if len(train_ds) == 0:
        raise StageError(f"dataset {options.dataset} split {options.train_split!r} is empty")
    eval_ds = None
    if options.eval_split:
        if options.eval_split not in data:
            raise StageError(f"dataset {options.dataset} has no split {options.eval_split!r} (has {', '.join(data)})")
        eval_ds = data[options.eval_split]
        _check_columns(eval_ds, options, trainer_def)
    return train_ds, eval_ds


def _check_columns(ds: Any, options: Any, trainer_def: Any) -> None:
    missing = [c for c in trainer_def.columns if c not in ds.column_names]
    if missing:
        raise StageError(
            f"dataset {options.dataset} lacks column(s) {', '.join(missing)} that trainer {options.trainer} needs "
            f"(has {', '.join(ds.column_names) or 'none'})"
        )


def dataset_max_length(dataset_artifact: Path) -> int | None:
    """The token limit the dataset stage filtered its rows with (stats.json), if it had one."""
    try:
        return json.loads((dataset_artifact / "stats.json").read_text())["limits"]["max_length"]
    except (OSError, ValueError, KeyError, TypeError):
        return None

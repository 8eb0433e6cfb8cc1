"""Opening a dataset stage's sources: local files, dataset directories and Hub datasets, through ``datasets``.

A source is opened into Arrow stream files on disk (its ``datasets`` cache files) plus its row count and
column names; nothing else leaves this module, so the rest of the stage reads files, not ``Dataset``
objects, and the memory maps ``load_dataset`` opened are closed as soon as a source is open.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError

from sakura_data.memory import release_freed_memory
from sakura_data.options import FILE_FORMATS, SourceOptions
from sakura_data.stage import is_saved_dataset, locate


@dataclass(frozen=True)
class OpenedSource:
    files: list[str]  # Arrow stream files holding the rows, in order
    rows: int
    column_names: list[str]
    json_features: Any  # datasets.Features of the columns stored as JSON text (see json_columns), or None


def open_source(source: SourceOptions, i: int, recipe_dir: Path, cache_dir: Path, commit: str | None = None) -> OpenedSource:
    data = load_source(source, i, recipe_dir, cache_dir, commit)
    files = arrow_files(data, cache_dir / f"source{i}-flat.arrow")
    opened = OpenedSource(
        files=files, rows=len(data), column_names=list(data.column_names), json_features=json_columns(data.features),
    )
    # Close the dataset's memory maps: the pages of its output file that load_dataset left resident
    # (63 MiB of a 1M-row orca file) leave this process before the map workers are forked from it.
    del data
    gc.collect()
    release_freed_memory()  # and what load_dataset freed: the map workers fork from this process
    return opened


def json_columns(features: Any) -> Any:
    """The columns ``datasets`` stores as JSON-encoded text, as ``datasets.Features`` that decode them, or None.

    A JSON-lines column whose rows disagree on the type (a string in most rows, a list in one) gets the
    ``Json`` feature: every value, the strings too, is kept as its JSON text. Read from the Arrow files as
    they are, ``Name a book`` would reach the adapter as ``"Name a book"`` (quotes included) and the odd row
    would pass as text; decoded, each row holds its own value and the adapter judges its type. (``datasets``
    stores a string that is itself valid JSON, ``"2"``, unquoted: in such a column it decodes as the number.)"""
    import datasets

    def holds_json(feature: Any) -> bool:
        if isinstance(feature, datasets.Json):
            return True
        if isinstance(feature, dict):
            return any(holds_json(f) for f in feature.values())
        inner = getattr(feature, "feature", None)  # List, LargeList
        return inner is not None and holds_json(inner)

    found = {name: feature for name, feature in features.items() if holds_json(feature)}
    return datasets.Features(found) if found else None


def describe(source: SourceOptions, i: int) -> str:
    return f"source {i} ({source.path}, adapter {source.adapter})"


def load_source(source: SourceOptions, i: int, recipe_dir: Path, cache_dir: Path, commit: str | None = None) -> Any:
    """A ``datasets.Dataset`` for one source (memory-mapped Arrow); a Hub dataset at ``commit``, the one the
    plan resolved its revision to (the fingerprint holds it), when known."""
    import datasets

    where, path = locate(source, recipe_dir)
    label = describe(source, i)
    if where == "missing":
        raise StageError(f"{label}: no such file or directory: {path}")
    files = {"data_dir": source.data_dir, "data_files": source.data_files}  # None: datasets' defaults
    if where == "hub":
        from sakura_hub.timeouts import ensure as ensure_timeouts

        ensure_timeouts()
        try:
            data = datasets.load_dataset(
                source.path, name=source.subset, split=source.split, revision=commit or source.revision, **files
            )
        except Exception as exc:  # noqa: BLE001 - network, unknown repo or split: one line for the user
            raise StageError(f"{label}: cannot load Hub dataset: {type(exc).__name__}: {first_line(exc)}") from None
        if commit:
            from sakura_hub.cache import remember_commit

            remember_commit("dataset", source.path, source.revision or "main", commit)  # an offline plan finds it
        return data
    assert path is not None
    if path.is_dir():
        if is_saved_dataset(path):
            data = datasets.load_from_disk(str(path))
            if isinstance(data, datasets.DatasetDict):
                if source.split not in data:
                    raise StageError(f"{label}: no split {source.split!r} (has {', '.join(data)})")
                data = data[source.split]
            return data
        try:
            return datasets.load_dataset(str(path), split=source.split, cache_dir=str(cache_dir), **files)
        except Exception as exc:  # noqa: BLE001
            raise StageError(f"{label}: cannot read directory {path}: {first_line(exc)}") from None
    fmt = source.format or FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise StageError(f"{label}: cannot tell the format of {path.name} (set format = json / parquet / csv)")
    try:
        with quiet_datasets_errors():  # its ERROR log line duplicates the one-line error raised below
            return datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=str(cache_dir))
    except Exception as exc:  # noqa: BLE001 - find the bad line for JSON, else name the file
        if _blank(path):
            raise StageError(f"{label}: {path} is empty") from None
        if fmt == "json":
            bad = find_bad_json_line(path)
            if bad:
                raise StageError(f"{label}: {path}: line {bad[0]}: malformed JSON ({bad[1]})") from None
        raise StageError(f"{label}: cannot read {path} as {fmt}: {first_line(exc)}") from None


@contextlib.contextmanager
def quiet_datasets_errors() -> Iterator[None]:
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _blank(path: Path) -> bool:
    with open(path, "rb") as fh:
        while block := fh.read(1 << 16):
            if block.strip():
                return False
    return True


def find_bad_json_line(path: Path) -> tuple[int, str] | None:
    """The first line of a JSON-lines file that is not a JSON object (only called after a load failed)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 12).lstrip()
    if head.startswith(b"["):  # a single JSON document, not JSON lines
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            return exc.lineno, exc.msg
        return None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                return number, f"{exc.msg} at column {exc.colno}"
            if not isinstance(value, dict):
                return number, f"expected an object, got {type(value).__name__}"
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    cause = exc.__cause__ or exc.__context__
    if cause is not None and (not text or "generating the dataset" in text[0]):
        return first_line(cause)
    return text[0] if text else type(exc).__name__


def arrow_files(data: Any, flat_path: Path) -> list[str]:
    """The Arrow files holding a dataset's rows in order; a dataset that is not just its files is written out."""
    files = [f["filename"] for f in data.cache_files]
    if data._indices is None and files and sum(_stream_rows(f) for f in files) == len(data):
        return files
    return [f["filename"] for f in data.flatten_indices(cache_file_name=str(flat_path)).cache_files]


def _stream_rows(file: str) -> int:
    import pyarrow as pa

    with pa.memory_map(file) as source:  # bodies are not read: only the batch headers' pages are touched
        return sum(batch.num_rows for batch in pa.ipc.open_stream(source))

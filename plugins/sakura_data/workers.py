"""Mapping a source's rows in worker processes that read its Arrow files with plain reads.

Why not ``Dataset.map(num_proc=...)``: its workers read the source through memory maps, and every page a
worker reads stays in its resident set until it exits, so each worker's RSS grew with the rows of its
shard (+95 MiB per worker from 100k to 1M orca rows). Here each worker reads its range of rows with
ordinary reads, one batch at a time, maps it with ``rows.process_batch`` and appends it to its part file
with datasets' ``ArrowWriter``, so its memory does not depend on the number of rows. Workers are forked,
so adapters and tokenizers need not be picklable.

Mapped rows are numbered densely, one source after another (``rows``): each worker numbers the rows of its
part file from 0, and the parent, which knows how many rows each part holds once the workers are done,
turns them into global numbers (``MapResult.part_offsets``). Each worker writes ``(prompt hash, row, unit)``
of its kept rows into partition files, split by hash, for ``mixing.find_duplicates`` (the unit is the first
row made from the same source row or group: those rows share their prompt by design).

With an adapter's ``group_by`` no group is split: a batch's trailing group waits for the next batch
(``whole_groups``), and the parent moves each worker's first row to the start of a group, reading only
the group columns around the cut (``group_aligned``).
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue as queue_module
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError

from sakura_data.rows import AdapterFailed, Mapped, RowRejected, group_keys

GROUP_SCAN_ROWS = 1024  # rows of the group columns read at a time when looking for a group's start


@dataclass(frozen=True)
class MapJob:
    """What the workers of one source share."""

    files: list[str]  # the source's Arrow stream files, in row order
    columns: list[str]  # source columns the adapter reads (the group columns among them)
    group_by: tuple[str, ...]  # the adapter's group columns; empty: rows are mapped one at a time
    rows: int  # rows in the source
    batch_size: int
    process: Callable[..., Mapped]  # rows.process_batch with its options: (batch, first_row=...) -> Mapped
    features: Any  # datasets.Features of a mapped row
    partitions: int  # dedup partition files per worker; 0 with dedup off (no prompt hashes written)
    out_dir: Path
    name: str  # file name prefix, e.g. "source0"
    label: str  # the source as error messages name it
    log_path: Callable[[str], Path]  # a new log file's path for a name (``Store.log_path``)
    log_name: str  # the name of the logs that hold an adapter's traceback, e.g. "data-source0"
    json_features: Any = None  # datasets.Features decoding the read columns stored as JSON text, or None

    def part_path(self, worker: int) -> Path:
        return self.out_dir / f"{self.name}-part{worker}.arrow"

    def keys_path(self, worker: int, partition: int) -> Path:
        return self.out_dir / f"{self.name}-part{worker}.keys{partition}"


@dataclass
class MapResult:
    parts: list[Path]  # mapped rows, in source order
    part_rows: list[int]  # mapped rows in each part
    reasons: dict[str, int]  # by reason: source rows dropped before or by the adapter, mapped rows dropped after
    made: int  # rows the adapter made
    kept: int  # mapped rows not dropped (before deduplication)
    key_files: list[list[Path]]  # [partition] -> files, one per part

    @property
    def rows(self) -> int:
        """Mapped rows: those the adapter made and one placeholder per source row dropped before or by it."""
        return sum(self.part_rows)

    def part_offsets(self, first: int) -> list[int]:
        """The global number of each part's first mapped row, the source's first being ``first``."""
        offsets = [first]
        for rows in self.part_rows[:-1]:
            offsets.append(offsets[-1] + rows)
        return offsets


def map_source_rows(job: MapJob, workers: int, advance: Callable[[int], None]) -> MapResult:
    """Map every row of a source with ``workers`` processes (in this process when 1)."""
    workers = max(1, min(workers, job.rows))
    bounds = group_aligned(job, [job.rows * w // workers for w in range(workers + 1)])
    workers = len(bounds) - 1  # fewer when groups longer than a worker's share swallowed a cut
    if workers == 1:
        summaries = [map_range(job, 0, 0, job.rows, advance)]
    else:
        summaries = _run_workers(job, bounds, advance)
    reasons: collections.Counter[str] = collections.Counter()
    for summary in summaries:
        reasons.update(summary["reasons"])
    return MapResult(
        parts=[job.part_path(w) for w in range(workers)],
        part_rows=[s["rows"] for s in summaries],
        reasons=dict(reasons),
        made=sum(s["made"] for s in summaries),
        kept=sum(s["kept"] for s in summaries),
        key_files=[[job.keys_path(w, p) for w in range(workers)] for p in range(job.partitions)],
    )


def map_range(job: MapJob, worker: int, start: int, stop: int, advance: Callable[[int], None]) -> dict[str, Any]:
    """Map rows ``[start, stop)`` of the source; any failure is one line, its traceback in a log file."""
    try:
        return _map_range(job, worker, start, stop, advance)
    except StageError:
        raise
    except RowRejected as exc:  # the data's mistake, not a bug: no traceback to keep
        raise StageError(f"{job.label}: row {exc.row + 1}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - an adapter's bug (or sakura's): one line naming the source
        raise StageError(failure_line(job, worker, exc)) from exc


def failure_line(job: MapJob, worker: int, exc: Exception) -> str:
    """``source N (path, adapter NAME): row R: TypeError: message (traceback in LOG)``, writing LOG.

    The worker writes the log itself: a forked worker's traceback cannot travel to the parent."""
    error = exc.__cause__ if isinstance(exc, AdapterFailed) and exc.__cause__ else exc  # the adapter's own
    log = job.log_path(f"{job.log_name}-worker{worker}")
    log.write_text("".join(traceback.format_exception(error)))
    row = f"row {exc.row + 1}: " if isinstance(exc, AdapterFailed) else ""  # 1-based: a JSON-lines file's line
    message = str(error).strip().splitlines()
    what = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    return f"{job.label}: {row}{what} (traceback in {log})"


def _map_range(job: MapJob, worker: int, start: int, stop: int, advance: Callable[[int], None]) -> dict[str, Any]:
    """Map rows ``[start, stop)`` of the source into this worker's part file and key partitions."""
    import numpy as np
    from datasets.arrow_writer import ArrowWriter

    reasons: collections.Counter[str] = collections.Counter()
    kept = made = 0
    row = 0  # this part's mapped rows so far: the parent adds the part's offset
    key_files = [open(job.keys_path(worker, p), "wb") for p in range(job.partitions)]  # noqa: SIM115
    writer = ArrowWriter(features=job.features, path=str(job.part_path(worker)))
    try:
        source_row = start
        for batch in whole_groups(read_rows(job.files, job.columns, start, stop, job.batch_size), job.group_by):
            mapped = job.process(decoded(batch.to_pydict(), job.json_features), first_row=source_row)
            out = mapped.columns
            writer.write_batch(out)
            keep = np.array(out["_drop"], dtype=object) == ""
            reasons.update(r for r in out["_drop"] if r)
            kept += int(keep.sum())
            made += mapped.made
            if job.partitions:
                keys = np.array(out["_key"], dtype=np.int64)[keep]
                rows = np.flatnonzero(keep).astype(np.int64) + row
                units = np.array(mapped.units, dtype=np.int64)[keep] + row
                partition = keys.view(np.uint64) % np.uint64(job.partitions)
                for p in range(job.partitions):
                    mine = partition == p
                    np.stack([keys[mine], rows[mine], units[mine]], axis=1).tofile(key_files[p])
            row += len(out["_drop"])
            source_row += batch.num_rows
            advance(batch.num_rows)
        writer.finalize()
    finally:
        writer.close()
        for f in key_files:
            f.close()
    return {"reasons": dict(reasons), "kept": kept, "made": made, "rows": row}


def decoded(batch: dict[str, list[Any]], json_features: Any) -> dict[str, list[Any]]:
    """The batch with its JSON-text columns decoded (``sources.json_columns`` says why)."""
    if json_features is not None:
        batch.update(json_features.decode_batch({c: batch[c] for c in json_features}))
    return batch


def whole_groups(tables: Iterator[Any], group_by: tuple[str, ...]) -> Iterator[Any]:
    """``tables`` re-cut so that none ends inside a group: each table's last group waits for the next table."""
    import pyarrow as pa

    if not group_by:
        yield from tables
        return
    pending = None
    for table in tables:
        if pending is not None:
            table = pa.concat_tables([pending, table])
        last = last_group_start(table.select(list(group_by)).to_pydict(), group_by)
        if last:
            yield table.slice(0, last)
        pending = table.slice(last)
    if pending is not None:
        yield pending


def last_group_start(batch: dict[str, list[Any]], group_by: tuple[str, ...]) -> int:
    keys = group_keys(batch, group_by)
    start = len(keys) - 1
    while start > 0 and keys[start - 1] == keys[start]:
        start -= 1
    return start


def group_aligned(job: MapJob, bounds: list[int]) -> list[int]:
    """Workers' row bounds, each moved forward to the start of a group so that no worker splits one; a
    bound a group swallowed whole is left out (one worker fewer)."""
    if not job.group_by or len(bounds) <= 2:
        return bounds
    aligned = [0, *(next_group_start(job, b) for b in bounds[1:-1]), job.rows]
    return list(dict.fromkeys(aligned))


def next_group_start(job: MapJob, row: int) -> int:
    """The first row at or after ``row`` that starts a group (the source's row count if none does)."""
    start, window = row - 1, GROUP_SCAN_ROWS
    while start + 1 < job.rows:
        stop = min(job.rows, start + window)
        keys = group_keys(peek_rows(job.files, list(job.group_by), start, stop), job.group_by)
        changed = next((k for k in range(1, len(keys)) if keys[k] != keys[k - 1]), None)
        if changed is not None:
            return start + changed
        start, window = stop - 1, window * 2
    return job.rows


def peek_rows(files: list[str], columns: list[str], start: int, stop: int) -> dict[str, list[Any]]:
    """Rows ``[start, stop)`` of some columns, as Python lists, through memory maps: only the pages of those
    rows of those columns are read (and only a few rows are read so: mapped pages stay resident)."""
    import pyarrow as pa

    pieces = []
    position = 0
    for file in files:
        with pa.memory_map(file) as source:
            for record_batch in pa.ipc.open_stream(source):
                n = record_batch.num_rows
                lo, hi = max(start - position, 0), min(stop - position, n)
                position += n
                if hi > lo:
                    pieces.append(pa.Table.from_batches([record_batch.select(columns).slice(lo, hi - lo)]).to_pydict())
                if position >= stop:
                    break
        if position >= stop:
            break
    return {c: [v for piece in pieces for v in piece[c]] for c in columns}


def read_rows(files: list[str], columns: list[str], start: int, stop: int, batch_size: int) -> Iterator[Any]:
    """Rows ``[start, stop)`` over ``files`` as tables of ``batch_size`` rows, read with plain reads."""
    import pyarrow as pa

    pending: list[Any] = []
    pending_rows = 0
    position = 0
    for file in files:
        if position >= stop:
            break
        with pa.OSFile(file) as source:
            for record_batch in pa.ipc.open_stream(source):
                n = record_batch.num_rows
                lo, hi = max(start - position, 0), min(stop - position, n)
                position += n
                if hi <= lo:
                    if position >= stop:
                        break
                    continue
                pending.append(record_batch.select(columns).slice(lo, hi - lo))
                pending_rows += hi - lo
                while pending_rows >= batch_size:
                    table = pa.Table.from_batches(pending)
                    yield table.slice(0, batch_size)
                    rest = table.slice(batch_size)
                    pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending)


def _run_workers(job: MapJob, bounds: list[int], advance: Callable[[int], None]) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("fork")
    messages = context.Queue()
    processes = [
        context.Process(target=_worker, args=(job, w, bounds[w], bounds[w + 1], messages, os.getpid()), daemon=True)
        for w in range(len(bounds) - 1)
    ]
    for process in processes:
        process.start()
    summaries: dict[int, dict[str, Any]] = {}
    try:
        while len(summaries) < len(processes):
            try:
                kind, worker, payload = messages.get(timeout=0.2)
            except queue_module.Empty:
                dead = [w for w, p in enumerate(processes) if p.exitcode not in (None, 0) and w not in summaries]
                if dead and messages.empty():
                    code = processes[dead[0]].exitcode
                    raise StageError(f"{job.label}: map worker {dead[0]} died (exit code {code})") from None
                continue
            if kind == "rows":
                advance(payload)
            elif kind == "done":
                summaries[worker] = payload
            else:
                raise StageError(payload)
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
        messages.close()
    return [summaries[w] for w in range(len(processes))]


def _worker(job: MapJob, worker: int, start: int, stop: int, messages: Any, parent: int) -> None:
    from sakura_core.orphans import die_with_parent

    die_with_parent(parent)  # a SIGKILLed run takes its workers with it
    try:
        summary = map_range(job, worker, start, stop, lambda n: messages.put(("rows", worker, n)))
    except StageError as exc:  # already one line (the traceback, if any, in a log): the parent raises it
        messages.put(("error", worker, str(exc)))
    else:
        messages.put(("done", worker, summary))

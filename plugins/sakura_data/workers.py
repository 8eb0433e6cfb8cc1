"""Mapping a source's rows in worker processes that read its Arrow files with plain reads.

Why not ``Dataset.map(num_proc=...)``: its workers read the source through memory maps, and every page a
worker reads stays in its resident set until it exits, so each worker's RSS grew with the rows of its
shard (+95 MiB per worker from 100k to 1M orca rows). Here each worker reads its range of rows with
ordinary reads, one batch at a time, maps it with ``rows.process_batch`` and appends it to its part file
with datasets' ``ArrowWriter``, so its memory does not depend on the number of rows. Workers are forked,
so adapters and tokenizers need not be picklable.

Each worker also writes ``(prompt hash, global row)`` of its kept rows into partition files, split by
hash, for ``mixing.find_duplicates``.
"""

from __future__ import annotations

import collections
import multiprocessing
import queue as queue_module
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError


@dataclass(frozen=True)
class MapJob:
    """What the workers of one source share."""

    files: list[str]  # the source's Arrow stream files, in row order
    columns: list[str]  # source columns the adapter reads
    rows: int  # rows in the source
    batch_size: int
    process: Callable[[dict[str, list[Any]]], dict[str, list[Any]]]  # rows.process_batch with its options
    features: Any  # datasets.Features of a mapped row
    row_offset: int  # global row number of the source's first row (sources are numbered one after another)
    partitions: int  # dedup partition files per worker; 0 with dedup off (no prompt hashes written)
    out_dir: Path
    name: str  # file name prefix, e.g. "source0"
    label: str  # the source as error messages name it

    def part_path(self, worker: int) -> Path:
        return self.out_dir / f"{self.name}-part{worker}.arrow"

    def keys_path(self, worker: int, partition: int) -> Path:
        return self.out_dir / f"{self.name}-part{worker}.keys{partition}"


@dataclass
class MapResult:
    parts: list[Path]  # mapped rows, in source order
    reasons: dict[str, int]  # rows dropped, by reason
    kept: int  # rows not dropped (before deduplication)
    key_files: list[list[Path]]  # [partition] -> files


def map_source_rows(job: MapJob, workers: int, advance: Callable[[int], None]) -> MapResult:
    """Map every row of a source with ``workers`` processes (in this process when 1)."""
    workers = max(1, min(workers, job.rows))
    bounds = [job.rows * w // workers for w in range(workers + 1)]
    if workers == 1:
        try:
            summaries = [map_range(job, 0, 0, job.rows, advance)]
        except StageError:
            raise
        except Exception as exc:  # noqa: BLE001 - an adapter's bug: one line naming the source
            raise StageError(f"{job.label}: {type(exc).__name__}: {exc}") from exc
    else:
        summaries = _run_workers(job, bounds, advance)
    reasons: collections.Counter[str] = collections.Counter()
    for summary in summaries:
        reasons.update(summary["reasons"])
    return MapResult(
        parts=[job.part_path(w) for w in range(workers)],
        reasons=dict(reasons),
        kept=sum(s["kept"] for s in summaries),
        key_files=[[job.keys_path(w, p) for w in range(workers)] for p in range(job.partitions)],
    )


def map_range(job: MapJob, worker: int, start: int, stop: int, advance: Callable[[int], None]) -> dict[str, Any]:
    """Map rows ``[start, stop)`` of the source into this worker's part file and key partitions."""
    import numpy as np
    from datasets.arrow_writer import ArrowWriter

    reasons: collections.Counter[str] = collections.Counter()
    kept = 0
    key_files = [open(job.keys_path(worker, p), "wb") for p in range(job.partitions)]  # noqa: SIM115
    writer = ArrowWriter(features=job.features, path=str(job.part_path(worker)))
    try:
        row = job.row_offset + start
        for batch in read_rows(job.files, job.columns, start, stop, job.batch_size):
            out = job.process(batch.to_pydict())
            writer.write_batch(out)
            drop = np.array(out["_drop"], dtype=object)
            keep = drop == ""
            reasons.update(r for r in out["_drop"] if r)
            kept += int(keep.sum())
            if job.partitions:
                keys = np.array(out["_key"], dtype=np.int64)[keep]
                rows = np.flatnonzero(keep).astype(np.int64) + row
                partition = keys.view(np.uint64) % np.uint64(job.partitions)
                for p in range(job.partitions):
                    mine = partition == p
                    np.stack([keys[mine], rows[mine]], axis=1).tofile(key_files[p])
            row += batch.num_rows
            advance(batch.num_rows)
        writer.finalize()
    finally:
        writer.close()
        for f in key_files:
            f.close()
    return {"reasons": dict(reasons), "kept": kept}


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
        context.Process(target=_worker, args=(job, w, bounds[w], bounds[w + 1], messages), daemon=True)
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
                raise StageError(f"{job.label}: {payload}")
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
        messages.close()
    return [summaries[w] for w in range(len(processes))]


def _worker(job: MapJob, worker: int, start: int, stop: int, messages: Any) -> None:
    try:
        summary = map_range(job, worker, start, stop, lambda n: messages.put(("rows", worker, n)))
    except StageError as exc:
        messages.put(("error", worker, str(exc)))
    except Exception as exc:  # noqa: BLE001 - an adapter's bug: name it in one line, in the parent
        messages.put(("error", worker, f"{type(exc).__name__}: {exc}"))
    else:
        messages.put(("done", worker, summary))

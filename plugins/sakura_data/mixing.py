"""Deduplication, sampling, shuffling and token-length statistics with memory that does not grow with rows.

Every random choice is a function of the stage's seed and a row's global number (the sources' mapped rows
numbered one after another, see ``rows``), never of the order work happens in: the result is the same for
any ``batch_size``, ``num_proc`` or number of shuffle buckets.

- Deduplication sorts ``(prompt hash, row, unit)`` entries one hash partition at a time
  (``find_duplicates``); only the duplicates' row numbers are kept.
- Sampling (``weight`` below 1 or fractional, ``max_rows``) is selection sampling (Knuth's Algorithm S)
  in row order: an exact uniform sample without replacement, deciding row by row.
- Shuffling gives every output row a random 64-bit key and writes rows sorted by key: rows are scattered
  into bucket files by key range, then each bucket is sorted in memory (``Shuffler``). That is a uniform
  random permutation, with one bucket in memory at a time.
- Token-length percentiles come from a histogram of lengths, exact and bounded by the longest row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

BUCKET_BYTES = 16 << 20  # Arrow bytes of output rows sorted in memory at a time when shuffling (~2x at the peak)
MAX_BUCKETS = 512  # open bucket files at once
PARTITION_ROWS = 250_000  # (prompt hash, row, unit) entries sorted in memory at a time when deduplicating
KEY_FIELDS = 3  # int64s per entry in a key file

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 whose outputs look independent and uniform."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def row_keys(seed: int, salt: int, rows: np.ndarray, copies: np.ndarray | None = None) -> np.ndarray:
    """Random uint64 keys of rows (and of their copies, for repeated rows), fixed by seed and salt."""
    with np.errstate(over="ignore"):
        base = mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF, salt], dtype=np.uint64)).sum(dtype=np.uint64)
        x = rows.astype(np.uint64) * _GOLDEN + base
        if copies is not None:
            x = mix64(x) + copies.astype(np.uint64) * _GOLDEN
        return mix64(x)


def uniform(keys: np.ndarray) -> np.ndarray:
    """Keys as floats in [0, 1), monotone in the key."""
    return (keys >> np.uint64(11)).astype(np.float64) * 2.0**-53


# -- deduplication -------------------------------------------------------------------------------------
def partitions_for(rows: int) -> int:
    return max(1, -(-rows // PARTITION_ROWS))


def find_duplicates(key_files: list[list[Path]], offsets: list[int]) -> np.ndarray:
    """Sorted global rows whose prompt hash appeared in an earlier unit (source row or group).

    ``key_files[p][j]`` holds partition p of part j: ``(prompt hash, row, unit)`` entries, rows and units
    numbered within the part, whose first row is global row ``offsets[j]``. A unit is the first row made from
    the same source row or group: those rows share their prompt by design (every pair of one prompt's
    answers), so they are not duplicates of each other. A partition holding more than ``PARTITION_ROWS``
    entries (an adapter made more rows than the source had) is sorted in slices of its hashes.
    """
    duplicates = []
    for files in key_files:
        present = [(f, offset) for f, offset in zip(files, offsets) if f.exists()]
        entries = sum(f.stat().st_size for f, _ in present) // (8 * KEY_FIELDS)
        slices = max(1, -(-entries // PARTITION_ROWS))
        for piece in range(slices):
            found = later_units(_read_keys(present, len(key_files), slices, piece))
            if found.size:
                duplicates.append(found)
    if not duplicates:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(duplicates))


def _read_keys(files: list[tuple[Path, int]], partitions: int, slices: int, piece: int) -> np.ndarray:
    """The entries of a partition's files with global rows and units; with ``slices`` > 1 only those whose
    hash falls in slice ``piece`` (files read ``PARTITION_ROWS`` entries at a time)."""
    parts = []
    for path, offset in files:
        size = path.stat().st_size // (8 * KEY_FIELDS)
        for start in range(0, size, PARTITION_ROWS):
            chunk = np.fromfile(path, dtype=np.int64, count=PARTITION_ROWS * KEY_FIELDS, offset=start * 8 * KEY_FIELDS)
            chunk = chunk.reshape(-1, KEY_FIELDS)
            if slices > 1:  # the partition is the hash modulo partitions; the slice, the next digits
                hashes = chunk[:, 0].view(np.uint64)
                chunk = chunk[(hashes // np.uint64(partitions)) % np.uint64(slices) == np.uint64(piece)]
            chunk[:, 1:] += offset
            parts.append(chunk)
    return np.concatenate(parts) if parts else np.empty((0, KEY_FIELDS), dtype=np.int64)


def later_units(entries: np.ndarray) -> np.ndarray:
    """Rows of ``(hash, row, unit)`` entries whose hash appeared in an earlier unit."""
    if entries.size == 0:
        return np.empty(0, dtype=np.int64)
    order = np.lexsort((entries[:, 1], entries[:, 0]))  # by hash, then row: the earliest row of a hash comes first
    keys, rows, units = entries[order, 0], entries[order, 1], entries[order, 2]
    del order
    first_of_hash = np.empty(keys.size, dtype=bool)
    first_of_hash[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first_of_hash[1:])
    first_unit = units[first_of_hash][np.cumsum(first_of_hash) - 1]  # the unit of each hash's earliest row
    return rows[units != first_unit]


def among(rows: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Mask of ``rows`` (ascending) that are in ``sorted_set``."""
    if sorted_set.size == 0 or rows.size == 0:
        return np.zeros(rows.size, dtype=bool)
    lo, hi = np.searchsorted(sorted_set, [rows[0], rows[-1] + 1])
    return np.isin(rows, sorted_set[lo:hi])


# -- sampling ------------------------------------------------------------------------------------------
def rows_out(kept: int, weight: float | None, max_rows: int | None) -> int:
    """How many rows a source contributes, from its rows left after filtering and deduplication."""
    if max_rows is not None:
        return min(kept, max_rows)
    if weight is not None and kept:
        return int(round(weight * kept))
    return kept


class Sampler:
    """How many times each of a source's kept rows is taken, deciding in row order.

    ``target = repeats * kept + rest``: every row ``repeats`` times, plus ``rest`` rows drawn without
    replacement by selection sampling, each row taken with probability (still needed) / (still to see).
    """

    def __init__(self, kept: int, target: int, seed: int, salt: int):
        self.repeats, self.rest = divmod(target, kept) if kept else (0, 0)
        self.remaining = kept
        self.seed, self.salt = seed, salt

    def take(self, rows: np.ndarray) -> np.ndarray:
        counts = np.full(rows.size, self.repeats, dtype=np.int64)
        if self.rest == 0 or rows.size == 0:
            self.remaining -= rows.size
            return counts
        u = uniform(row_keys(self.seed, self.salt, rows))
        need, remaining = self.rest, self.remaining
        for i, draw in enumerate(u.tolist()):
            if need and draw * remaining < need:
                counts[i] += 1
                need -= 1
            remaining -= 1
        self.rest, self.remaining = need, remaining
        return counts


def expand(positions: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each position repeated ``counts`` times, with the copy number (0, 1, ...) of each repeat."""
    taken = np.repeat(positions, counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return taken, np.arange(taken.size) - starts


# -- shuffling -----------------------------------------------------------------------------------------
class Shuffler:
    """Rows in the order of their random keys, one bucket (a key range) in memory at a time."""

    def __init__(self, work_dir: Path, expected_bytes: int):
        self.work_dir = work_dir
        self.buckets = int(min(MAX_BUCKETS, max(1, -(-expected_bytes // BUCKET_BYTES))))
        self.writers: dict[int, Any] = {}

    def path(self, bucket: int) -> Path:
        return self.work_dir / f"shuffle-{bucket}.arrow"

    def add(self, table: Any, keys: np.ndarray) -> None:
        import pyarrow as pa

        table = table.append_column("_order", pa.array(keys, type=pa.uint64()))
        bucket_of = np.minimum((uniform(keys) * self.buckets).astype(np.int64), self.buckets - 1)
        by_bucket = np.argsort(bucket_of, kind="stable")
        bounds = np.searchsorted(bucket_of[by_bucket], np.arange(self.buckets + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            part = table.take(pa.array(by_bucket[bounds[b] : bounds[b + 1]]))
            if b not in self.writers:
                self.writers[b] = pa.ipc.new_stream(str(self.path(b)), part.schema)
            self.writers[b].write_table(part)

    def ordered(self) -> Iterator[Any]:
        import pyarrow as pa

        for writer in self.writers.values():
            writer.close()
        for b in sorted(self.writers):
            with pa.OSFile(str(self.path(b))) as source:
                table = pa.ipc.open_stream(source).read_all()
            self.path(b).unlink()
            order = np.argsort(table.column("_order").to_numpy(), kind="stable")
            table = table.take(pa.array(order)).drop_columns(["_order"])
            del order
            yield table
            del table
            # Arrow's allocator keeps freed buckets for reuse; hand them back so the peak stays one bucket
            pa.default_memory_pool().release_unused()


# -- token-length statistics ---------------------------------------------------------------------------
class Histogram:
    """Counts of integer lengths; percentiles equal ``np.percentile(values, p, method="higher")``."""

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        counts = np.bincount(values, minlength=self.counts.size)
        counts[: self.counts.size] += self.counts
        self.counts = counts

    def summary(self, percentiles: tuple[int, ...]) -> dict[str, Any]:
        n = int(self.counts.sum())
        if n == 0:
            return {}
        cumulative = np.cumsum(self.counts)
        out = {}
        for p in percentiles:
            q = p / 100
            index = int(np.ceil(n * q - q))  # the rank np.percentile's "higher" method picks, computed as it does
            out[f"p{p}"] = int(np.searchsorted(cumulative, index + 1))
        out["max"] = int(np.flatnonzero(self.counts)[-1])
        out["mean"] = round(float((self.counts * np.arange(self.counts.size)).sum() / n), 1)
        return out

"""Deduplication, sampling, shuffling and token-length statistics with memory that does not grow with rows.

Every random choice is a function of the stage's seed and a row's global number (the sources' rows
numbered one after another), never of the order work happens in: the result is the same for any
``batch_size``, ``num_proc`` or number of shuffle buckets.

- Deduplication sorts ``(prompt hash, row)`` pairs one hash partition at a time (``find_duplicates``);
  only the duplicates' row numbers are kept.
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
PARTITION_ROWS = 250_000  # (prompt hash, row) pairs sorted in memory at a time when deduplicating

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


def find_duplicates(key_files: list[list[Path]]) -> np.ndarray:
    """Sorted global rows whose prompt hash appeared at an earlier row; ``key_files[p]`` holds partition p."""
    duplicates = []
    for files in key_files:
        parts = [np.fromfile(f, dtype=np.int64).reshape(-1, 2) for f in files if f.exists()]
        pairs = np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.int64)
        if pairs.size == 0:
            continue
        keys, rows = pairs[:, 0], pairs[:, 1]
        order = np.lexsort((rows, keys))  # by hash, then row: the earliest row of a hash comes first
        sorted_keys = keys[order]
        later = np.empty(order.size, dtype=bool)
        later[:1] = False
        np.equal(sorted_keys[1:], sorted_keys[:-1], out=later[1:])
        duplicates.append(rows[order[later]])
        del parts, pairs, keys, rows, order, sorted_keys, later
    if not duplicates:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(duplicates))


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

"""The work of a ``dataset`` stage: read sources, map rows with adapters, filter by tokens, mix, split, save.

Imported only when a dataset stage runs (``datasets``, ``transformers`` and numpy are imported here).
Rows go from file to file a batch at a time, read with plain reads (``workers``), and dedup, sampling and
shuffling work on disk a bounded piece at a time (``mixing``): peak memory does not grow with the number
of rows. What the process holds per row is only the row numbers of duplicate prompts.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sakura_core.errors import StageError
from sakura_core.stage import StageContext

from sakura_data.adapters import Adapter
from sakura_data.mixing import (
    Histogram, Sampler, Shuffler, among, expand, find_duplicates, partitions_for, row_keys, rows_out,
)
from sakura_data.options import DatasetOptions, SourceOptions
from sakura_data.rows import HELPER_COLUMNS, features_for, process_batch
from sakura_data.save import SplitWriter
from sakura_data.sources import OpenedSource, describe, first_line, open_source
from sakura_data.workers import MapJob, MapResult, map_source_rows, read_rows

PERCENTILES = (50, 90, 95, 99)
PARALLEL_MIN_ROWS = 20_000  # below this, worker start-up costs more than it saves
MIX_BATCH_ROWS = 10_000  # rows read at a time when mixing: fewer, larger pieces per shuffle bucket
SHUFFLE_SALT = 1 << 32  # sampling uses the source's index as its salt; the shuffle keys use this one


# -- checking --------------------------------------------------------------------------------------
def check_columns(
    opened: OpenedSource, source: SourceOptions, i: int, adapter: Adapter
) -> tuple[Any, list[str], list[str]]:
    """(adapter options, required columns, columns to read) of a source; fails on a missing column."""
    from sakura_core.options import validate_options

    label = describe(source, i)
    found = opened.column_names
    adapter_options = validate_options(adapter.Options, source.options)
    required = adapter.required_columns(adapter_options, found)
    expected = required + [c for c in adapter.group_by if c not in required]  # group columns: read, may be empty
    missing = [c for c in expected if c not in found]
    if missing:
        raise StageError(
            f"{label}: missing column(s) {', '.join(missing)}; expected {', '.join(expected)}; "
            f"found {', '.join(found) or 'no columns'}"
        )
    if opened.rows == 0:
        raise StageError(f"{label}: the source has no rows")
    present = expected + [c for c in adapter.optional(adapter_options) if c in found and c not in expected]
    return adapter_options, required, present


# -- the stage -------------------------------------------------------------------------------------
def load_tokenizer(ctx: StageContext, name: str) -> Any:
    from transformers import AutoTokenizer

    path = ctx.input(name).path
    from sakura_models.loading import from_pretrained

    try:
        tokenizer = from_pretrained(AutoTokenizer, path, name)
    except StageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise StageError(f"tokenizer {name}: cannot load a tokenizer from {path}: {first_line(exc)}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise StageError(f"tokenizer {name}: the tokenizer in {path} has no chat template to count tokens with")
    return tokenizer


def build_dataset(ctx: StageContext) -> dict[str, Any]:
    import datasets

    options: DatasetOptions = ctx.options
    datasets.disable_progress_bars()
    adapters = [ctx.plugins.dataset_adapters.get(s.adapter) for s in options.sources]
    fmt = adapters[0].format
    tokenizer = load_tokenizer(ctx, options.tokenizer) if options.tokenizer else None
    cache_dir = ctx.work_dir / "hf-datasets"
    cache_dir.mkdir(parents=True, exist_ok=True)

    # 1. read every source and check its columns before any processing
    commits = [(ctx.external.get(f"sources[{i}]") or {}).get("revision") for i in range(len(options.sources))]
    opened = [open_source(s, i, ctx.recipe_dir, cache_dir, commit) for i, (s, commit) in enumerate(zip(options.sources, commits))]
    columns = [check_columns(o, s, i, a) for i, (s, a, o) in enumerate(zip(options.sources, adapters, opened))]
    sizes = [o.rows for o in opened]
    # the hash partitions are sized by source rows; find_duplicates splits one an expanding adapter overfilled
    partitions = partitions_for(sum(sizes)) if options.dedup else 0

    # 2. map + count tokens, per source, in workers that also write the prompt hashes for dedup
    mapped: list[MapResult] = []
    for i, (source, adapter) in enumerate(zip(options.sources, adapters)):
        job = map_job(ctx, options, source, i, adapter, fmt, tokenizer, opened[i], columns[i], partitions)
        num_proc = options.num_proc or (min(2, os.cpu_count() or 1) if sizes[i] >= PARALLEL_MIN_ROWS else 1)
        with ctx.progress(f"source {i} {source.path}", total=sizes[i], unit="rows") as task:
            result = map_source_rows(job, num_proc, task.advance)
        if result.kept == 0:
            raise StageError(f"{describe(source, i)}: {_all_dropped_text(sizes[i], result)}")
        mapped.append(result)
    # mapped rows are numbered one source after another; for 1:1 adapters that is the source rows' numbering
    offsets = [sum(m.rows for m in mapped[:i]) for i in range(len(mapped))]

    # 3. dedup across sources (earlier rows win), then each source's weight / cap
    duplicates = None
    if options.dedup:
        duplicates = find_duplicates(
            [[f for m in mapped for f in m.key_files[p]] for p in range(partitions)],
            [o for m, first in zip(mapped, offsets) for o in m.part_offsets(first)],
        )
    stats_sources = []
    total_dropped: dict[str, int] = {}
    for i, (source, result) in enumerate(zip(options.sources, mapped)):
        reasons = dict(result.reasons)
        if duplicates is not None:
            lo, hi = np.searchsorted(duplicates, [offsets[i], offsets[i] + result.rows])
            if hi > lo:
                reasons["duplicate prompt"] = int(hi - lo)
        for reason, n in reasons.items():
            total_dropped[reason] = total_dropped.get(reason, 0) + n
        kept = result.kept - reasons.get("duplicate prompt", 0)
        stats_sources.append(
            {
                "source": source.path,
                "adapter": source.adapter,
                "rows_in": sizes[i],
                "rows_made": result.made,
                "dropped": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
                "rows_kept": kept,
                "rows_out": rows_out(kept, source.weight, source.max_rows),
                **({"weight": source.weight} if source.weight is not None else {}),
                **({"max_rows": source.max_rows} if source.max_rows is not None else {}),
            }
        )
    total = sum(s["rows_out"] for s in stats_sources)
    if total == 0:
        raise StageError(f"every row was dropped ({_reasons_text(total_dropped)})")
    test_n = 0
    if options.test_size is not None:
        test_n = int(round(options.test_size * total)) if isinstance(options.test_size, float) else options.test_size
        if test_n < 1 or test_n >= total:
            raise StageError(f"test_size {options.test_size} leaves {total - test_n} training rows of {total}")

    # 4. mix, shuffle and split, streaming the mapped rows; write the splits
    final_columns = [c for c in features_for(fmt) if c not in HELPER_COLUMNS]
    features = datasets.Features({c: features_for(fmt)[c] for c in final_columns})
    writer = SplitWriter(ctx.output_dir / "dataset", {"test": test_n, "train": total - test_n}, features)
    lengths, prompt_lengths = write_mixed(ctx, options, mapped, stats_sources, offsets, duplicates, final_columns, writer)
    writer.close()

    tokens = None
    if tokenizer is not None:
        tokens = {"tokenizer": options.tokenizer, "total": lengths.summary(PERCENTILES)}
        if fmt != "sft":
            tokens["prompt"] = prompt_lengths.summary(PERCENTILES)
    split_rows = {"train": total - test_n, **({"test": test_n} if test_n else {})}
    stats = {
        "format": fmt,
        "rows": split_rows,
        "rows_in": sum(sizes),
        "dropped": dict(sorted(total_dropped.items(), key=lambda kv: -kv[1])),
        "sources": stats_sources,
        "tokens": tokens,
        # the limits the rows were filtered with, for the trainer to use the same ones
        "limits": {
            "tokenizer": options.tokenizer,
            "max_length": options.max_length,
            "max_prompt_length": options.max_prompt_length,
        },
        "seed": options.seed,
        "shuffled": options.shuffle,
        "dedup": options.dedup,
    }
    (ctx.output_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    ctx.log(
        "; ".join(
            f"{s['source']}: {s['rows_in']} in, "
            + (f"{s['rows_made']} made, " if s["rows_made"] != s["rows_in"] else "")
            + f"{s['rows_out']} out"
            + (f" (dropped {_reasons_text(s['dropped'])})" if s["dropped"] else "")
            for s in stats_sources
        )
    )
    metrics: dict[str, Any] = {
        "rows_train": split_rows["train"],
        "rows_in": stats["rows_in"],
        "rows_dropped": sum(total_dropped.values()),
    }
    if test_n:
        metrics["rows_test"] = test_n
    if tokens:
        metrics["tokens_p50"] = tokens["total"]["p50"]
        metrics["tokens_p95"] = tokens["total"]["p95"]
        metrics["tokens_max"] = tokens["total"]["max"]
    metrics["dropped"] = stats["dropped"]
    return metrics


def write_mixed(
    ctx: StageContext, options: DatasetOptions, mapped: list[MapResult], stats_sources: list[dict[str, Any]],
    offsets: list[int], duplicates: Any, final_columns: list[str], writer: SplitWriter,
) -> tuple[Histogram, Histogram]:
    """Stream every source's mapped rows: keep, sample, shuffle, write; the token-length histograms of the output."""
    lengths, prompt_lengths = Histogram(), Histogram()
    total = sum(s["rows_out"] for s in stats_sources)
    shuffler = None
    if options.shuffle:
        mapped_bytes = sum(p.stat().st_size for m in mapped for p in m.parts)
        shuffler = Shuffler(ctx.work_dir, mapped_bytes * total // max(1, sum(m.kept for m in mapped)))
    with ctx.progress("mixing", total=total, unit="rows") as task:
        for i, (result, stats) in enumerate(zip(mapped, stats_sources)):
            sampler = Sampler(stats["rows_kept"], stats["rows_out"], options.seed, salt=i)
            row = offsets[i]
            parts = [str(p) for p in result.parts]
            wanted = [*final_columns, "_drop", "_len", "_prompt_len"]
            for table in read_rows(parts, wanted, 0, result.rows, max(options.batch_size, MIX_BATCH_ROWS)):
                rows = np.arange(row, row + table.num_rows, dtype=np.int64)
                row += table.num_rows
                keep = pc.equal(table.column("_drop"), "").to_numpy(zero_copy_only=False)
                if duplicates is not None:
                    keep = keep & ~among(rows, duplicates)
                positions = np.flatnonzero(keep)
                taken, copies = expand(positions, sampler.take(rows[positions]))
                if taken.size == 0:
                    continue
                chosen = table.take(pa.array(taken))
                lengths.add(chosen.column("_len").to_numpy())
                prompt_lengths.add(chosen.column("_prompt_len").to_numpy())
                chosen = chosen.select(final_columns)
                if shuffler is not None:
                    shuffler.add(chosen, row_keys(options.seed, SHUFFLE_SALT, rows[taken], copies))
                else:
                    writer.write(chosen)
                task.advance(chosen.num_rows)
    if shuffler is not None:
        with ctx.progress("shuffling", total=total, unit="rows") as task:
            for table in shuffler.ordered():
                writer.write(table)
                task.advance(table.num_rows)
    return lengths, prompt_lengths


def map_job(
    ctx: StageContext, options: DatasetOptions, source: SourceOptions, i: int, adapter: Adapter, fmt: str,
    tokenizer: Any, opened: OpenedSource, columns: tuple[Any, list[str], list[str]], partitions: int,
) -> MapJob:
    import datasets

    adapter_options, required, present = columns
    json_features = opened.json_features and datasets.Features(
        {c: f for c, f in opened.json_features.items() if c in present}
    )
    process = functools.partial(
        process_batch,
        adapter=adapter,
        adapter_options=adapter_options,
        required=required,
        present=present,
        fmt=fmt,
        tokenizer=tokenizer,
        max_length=options.max_length,
        max_prompt_length=options.max_prompt_length,
    )
    return MapJob(
        files=opened.files, columns=present, group_by=tuple(adapter.group_by), rows=opened.rows,
        batch_size=options.batch_size, process=process, features=features_for(fmt), json_features=json_features or None,
        partitions=partitions, out_dir=ctx.work_dir,
        name=f"source{i}", label=describe(source, i), log_path=ctx.store.log_path, log_name=f"{ctx.name}-source{i}",
    )


def _all_dropped_text(rows_in: int, result: MapResult) -> str:
    reasons = _reasons_text(result.reasons)
    if result.rows == rows_in:  # one mapped row per source row
        return f"every one of its {rows_in} rows was dropped ({reasons})"
    return f"every row was dropped: {rows_in} rows in, {result.made} made by the adapter ({reasons})"


def _reasons_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])) or "no reason"

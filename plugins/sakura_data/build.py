"""The work of a ``dataset`` stage: read sources, map rows with adapters, filter by tokens, mix, split, save.

Imported only when a dataset stage runs (``datasets``, ``transformers`` and numpy are imported here).
Rows stay in memory-mapped Arrow files from start to end: per row, only an 8-byte prompt hash and a few
indices are held in memory, so peak memory does not grow with the number of rows.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError
from sakura_core.hashing import hash_json
from sakura_core.stage import StageContext

from sakura_data.adapters import Adapter, Skip
from sakura_data.options import FILE_FORMATS, DatasetOptions, SourceOptions
from sakura_data.stage import locate

PERCENTILES = (50, 90, 95, 99)
HELPER_COLUMNS = ("_drop", "_key", "_prompt_len", "_len")
PARALLEL_MIN_ROWS = 20_000
BUCKET_ROWS = 50_000  # rows of the output put in order in memory at a time  # below this, worker start-up costs more than it saves


# -- reading ---------------------------------------------------------------------------------------
def describe(source: SourceOptions, i: int) -> str:
    return f"source {i} ({source.path}, adapter {source.adapter})"


def load_source(source: SourceOptions, i: int, recipe_dir: Path, cache_dir: Path) -> Any:
    """A ``datasets.Dataset`` for one source (memory-mapped Arrow)."""
    import datasets

    where, path = locate(source, recipe_dir)
    label = describe(source, i)
    if where == "missing":
        raise StageError(f"{label}: no such file or directory: {path}")
    if where == "hub":
        try:
            return datasets.load_dataset(source.path, name=source.subset, split=source.split, revision=source.revision)
        except Exception as exc:  # noqa: BLE001 - network, unknown repo or split: one line for the user
            raise StageError(f"{label}: cannot load Hub dataset: {type(exc).__name__}: {_first_line(exc)}") from None
    assert path is not None
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            data = datasets.load_from_disk(str(path))
            if isinstance(data, datasets.DatasetDict):
                if source.split not in data:
                    raise StageError(f"{label}: no split {source.split!r} (has {', '.join(data)})")
                data = data[source.split]
            return data
        try:
            return datasets.load_dataset(str(path), split=source.split, cache_dir=str(cache_dir))
        except Exception as exc:  # noqa: BLE001
            raise StageError(f"{label}: cannot read directory {path}: {_first_line(exc)}") from None
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
        raise StageError(f"{label}: cannot read {path} as {fmt}: {_first_line(exc)}") from None


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    cause = exc.__cause__ or exc.__context__
    if cause is not None and (not text or "generating the dataset" in text[0]):
        return _first_line(cause)
    return text[0] if text else type(exc).__name__


# -- mapping ---------------------------------------------------------------------------------------
def features_for(fmt: str) -> Any:
    import datasets

    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    messages = datasets.List(message)
    helpers = {
        "_drop": datasets.Value("string"),
        "_key": datasets.Value("int64"),
        "_prompt_len": datasets.Value("int32"),
        "_len": datasets.Value("int32"),
    }
    if fmt == "sft":
        return datasets.Features({"messages": messages, **helpers})
    return datasets.Features({"prompt": messages, "chosen": messages, "rejected": messages, **helpers})


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and not (value.strip() if isinstance(value, str) else value))


def _prompt_key(messages: list[dict[str, str]]) -> int:
    """64-bit hash of the normalized prompt: case and whitespace folded."""
    text = "\x00".join(" ".join(m["content"].lower().split()) for m in messages)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def process_batch(
    batch: dict[str, list[Any]],
    *,
    adapter: Adapter,
    adapter_options: Any,
    required: list[str],
    present: list[str],
    fmt: str,
    tokenizer: Any,
    max_length: int | None,
    max_prompt_length: int | None,
) -> dict[str, list[Any]]:
    """Map a batch of source rows to canonical rows plus helper columns (drop reason, prompt hash, lengths)."""
    n = len(batch[present[0]])
    columns = ("messages",) if fmt == "sft" else ("prompt", "chosen", "rejected")
    out: dict[str, list[Any]] = {c: [] for c in (*columns, *HELPER_COLUMNS)}
    placeholder = [{"role": "user", "content": ""}]
    kept: list[int] = []
    for r in range(n):
        row = {c: batch[c][r] for c in present}
        reason = next((f"null or empty {c}" for c in required if _empty(row[c])), "")
        converted: dict[str, Any] = {}
        if not reason:
            try:
                converted = adapter.convert(row, adapter_options)
            except Skip as skip:
                reason = str(skip) or "skipped by adapter"
            else:
                if any(not m["content"] for c in columns for m in converted[c]) or any(not converted[c] for c in columns):
                    reason = "empty message"
        if reason:
            for c in columns:
                out[c].append(placeholder)
            out["_key"].append(0)
        else:
            for c in columns:
                out[c].append(converted[c])
            prompt = converted["prompt"] if fmt != "sft" else _sft_prompt(converted["messages"])
            out["_key"].append(_prompt_key(prompt))
            kept.append(r)
        out["_drop"].append(reason)
    out["_prompt_len"] = [0] * n
    out["_len"] = [0] * n
    if tokenizer is not None and kept:
        count_tokens(out, kept, fmt, tokenizer, max_length, max_prompt_length)
    return out


def _sft_prompt(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    first_answer = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    return messages[:first_answer] or messages


def count_tokens(
    out: dict[str, list[Any]], kept: list[int], fmt: str, tokenizer: Any, max_length: int | None,
    max_prompt_length: int | None,
) -> None:
    """Token lengths with the model's chat template; rows over the limits get a drop reason."""
    template = tokenizer.apply_chat_template
    if fmt == "sft":
        texts = template([out["messages"][r] for r in kept], tokenize=False)
        ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        for r, tokens in zip(kept, ids):
            out["_len"][r] = len(tokens)
            if max_length and len(tokens) > max_length:
                out["_drop"][r] = f"longer than {max_length} tokens"
        return
    prompts = [out["prompt"][r] for r in kept]
    texts = template(prompts, tokenize=False, add_generation_prompt=True)
    texts += template([p + out["chosen"][r] for p, r in zip(prompts, kept)], tokenize=False)
    texts += template([p + out["rejected"][r] for p, r in zip(prompts, kept)], tokenize=False)
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    k = len(kept)
    for j, r in enumerate(kept):
        prompt_len = len(ids[j])
        total = max(len(ids[k + j]), len(ids[2 * k + j]))
        out["_prompt_len"][r] = prompt_len
        out["_len"][r] = total
        if max_prompt_length and prompt_len > max_prompt_length:
            out["_drop"][r] = f"prompt longer than {max_prompt_length} tokens"
        elif max_length and total > max_length:
            out["_drop"][r] = f"longer than {max_length} tokens"


def check_columns(data: Any, source: SourceOptions, i: int, adapter: Adapter) -> tuple[Any, list[str], list[str]]:
    """(adapter options, required columns, columns to read) of a source; fails on a missing column."""
    from sakura_core.recipe import validate_options

    label = describe(source, i)
    found = list(data.column_names)
    adapter_options = validate_options(adapter.Options, source.adapter_options())
    required = adapter.required_columns(adapter_options, found)
    missing = [c for c in required if c not in found]
    if missing:
        raise StageError(
            f"{label}: missing column(s) {', '.join(missing)}; expected {', '.join(required)}; "
            f"found {', '.join(found) or 'no columns'}"
        )
    if len(data) == 0:
        raise StageError(f"{label}: the source has no rows")
    present = required + [c for c in adapter.optional(adapter_options) if c in found and c not in required]
    return adapter_options, required, present


def map_source(
    data: Any, source: SourceOptions, i: int, adapter: Adapter, fmt: str, tokenizer: Any, options: DatasetOptions,
    cache_file: Path, fingerprint: str, columns: tuple[Any, list[str], list[str]],
) -> Any:
    label = describe(source, i)
    adapter_options, required, present = columns
    data = data.select_columns(present)
    num_proc = options.num_proc or (min(2, os.cpu_count() or 1) if len(data) >= PARALLEL_MIN_ROWS else 1)
    return data.map(
        process_batch,
        batched=True,
        batch_size=options.batch_size,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=present,
        features=features_for(fmt),
        fn_kwargs={
            "adapter": adapter,
            "adapter_options": adapter_options,
            "required": required,
            "present": present,
            "fmt": fmt,
            "tokenizer": tokenizer,
            "max_length": options.max_length,
            "max_prompt_length": options.max_prompt_length,
        },
        cache_file_name=str(cache_file),
        new_fingerprint=fingerprint,
        desc=f"{label}: mapping",
    )


# -- the stage -------------------------------------------------------------------------------------
def load_tokenizer(ctx: StageContext, name: str) -> Any:
    from transformers import AutoTokenizer

    path = ctx.input(name).path
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001
        raise StageError(f"tokenizer {name}: cannot load a tokenizer from {path}: {_first_line(exc)}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise StageError(f"tokenizer {name}: the tokenizer in {path} has no chat template to count tokens with")
    return tokenizer


def build_dataset(ctx: StageContext) -> dict[str, Any]:
    import datasets
    import numpy as np
    import pyarrow.compute as pc

    options: DatasetOptions = ctx.options
    datasets.disable_progress_bars()
    adapters = [ctx.plugins.dataset_adapters.get(s.adapter) for s in options.sources]
    fmt = adapters[0].format
    tokenizer = load_tokenizer(ctx, options.tokenizer) if options.tokenizer else None
    cache_dir = ctx.work_dir / "hf-datasets"
    cache_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(options.seed)

    # 1. read every source and check its columns before any processing
    raw = [load_source(s, i, ctx.recipe_dir, cache_dir) for i, s in enumerate(options.sources)]
    columns = [check_columns(data, s, i, a) for i, (s, a, data) in enumerate(zip(options.sources, adapters, raw))]
    # 2. map + count tokens, per source, and count the drop reasons
    mapped_parts, keeps, reasons_per_source = [], [], []
    offset = 0
    for i, (source, adapter, data) in enumerate(zip(options.sources, adapters, raw)):
        with ctx.progress(f"source {i} {source.path}", total=len(data), unit="rows") as task:
            fingerprint = hash_json([ctx.fingerprint, i])[:16]
            cache_file = ctx.work_dir / f"source{i}-{fingerprint}.arrow"
            mapped = map_source(data, source, i, adapter, fmt, tokenizer, options, cache_file, fingerprint, columns[i])
            task.update(len(data))
        drop = mapped.data.column("_drop")
        reasons = {str(v["values"]): int(v["counts"]) for v in pc.value_counts(drop).to_pylist() if v["values"]}
        keep = np.flatnonzero(pc.equal(drop, "").to_numpy(zero_copy_only=False)) + offset
        if keep.size == 0:
            raise StageError(
                f"{describe(source, i)}: every one of its {len(data)} rows was dropped ({_reasons_text(reasons)})"
            )
        mapped_parts.append(mapped)
        keeps.append(keep)
        reasons_per_source.append(reasons)
        offset += len(mapped)
    combined = mapped_parts[0] if len(mapped_parts) == 1 else datasets.concatenate_datasets(mapped_parts)

    # 3. dedup across sources (earlier rows win), then each source's weight / cap
    if options.dedup:
        keeps = dedup(keeps, combined)
    kept_parts, stats_sources = [], []
    total_dropped: dict[str, int] = {}
    for i, (source, data, keep, reasons) in enumerate(zip(options.sources, raw, keeps, reasons_per_source)):
        duplicates = len(data) - sum(reasons.values()) - int(keep.size)
        if duplicates:
            reasons["duplicate prompt"] = duplicates
        for reason, n in reasons.items():
            total_dropped[reason] = total_dropped.get(reason, 0) + n
        sampled = _sample(keep, source, rng)
        stats_sources.append(
            {
                "source": source.path,
                "adapter": source.adapter,
                "rows_in": len(data),
                "dropped": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
                "rows_kept": int(keep.size),
                "rows_out": int(sampled.size),
                **({"weight": source.weight} if source.weight is not None else {}),
                **({"max_rows": source.max_rows} if source.max_rows is not None else {}),
            }
        )
        kept_parts.append(sampled)
    del keeps

    # 4. mix, shuffle, split (all as index arrays over memory-mapped tables), save
    order = np.concatenate(kept_parts)
    del kept_parts
    if order.size == 0:
        raise StageError(f"every row was dropped ({_reasons_text(total_dropped)})")
    if options.shuffle:
        rng.shuffle(order)
    test_n = 0
    if options.test_size is not None:
        test_n = int(round(options.test_size * order.size)) if isinstance(options.test_size, float) else options.test_size
        if test_n < 1 or test_n >= order.size:
            raise StageError(f"test_size {options.test_size} leaves {order.size - test_n} training rows of {order.size}")
    splits = {"train": order[test_n:] if test_n else order}
    if test_n:
        splits["test"] = order[:test_n]

    prompt_len = combined.data.column("_prompt_len").to_numpy()
    total_len = combined.data.column("_len").to_numpy()
    final_columns = [c for c in combined.column_names if c not in HELPER_COLUMNS]
    files = [f["filename"] for part in mapped_parts for f in part.cache_files]
    del combined, mapped_parts, raw, mapped, data, drop
    gc.collect()  # close the memory maps: pages read so far leave this process
    with ctx.progress("saving", total=int(order.size), unit="rows") as task:
        save_splits(files, splits, final_columns, ctx.output_dir / "dataset", task)

    tokens = None
    if tokenizer is not None:
        tokens = {"tokenizer": options.tokenizer, "total": _percentiles(total_len[order])}
        if fmt != "sft":
            tokens["prompt"] = _percentiles(prompt_len[order])
    stats = {
        "format": fmt,
        "rows": {name: int(idx.size) for name, idx in splits.items()},
        "rows_in": sum(s["rows_in"] for s in stats_sources),
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
            f"{s['source']}: {s['rows_in']} in, {s['rows_out']} out"
            + (f" (dropped {_reasons_text(s['dropped'])})" if s["dropped"] else "")
            for s in stats_sources
        )
    )
    metrics: dict[str, Any] = {
        "rows_train": stats["rows"]["train"],
        "rows_in": stats["rows_in"],
        "rows_dropped": sum(total_dropped.values()),
    }
    if "test" in stats["rows"]:
        metrics["rows_test"] = stats["rows"]["test"]
    if tokens:
        metrics["tokens_p50"] = tokens["total"]["p50"]
        metrics["tokens_p95"] = tokens["total"]["p95"]
        metrics["tokens_max"] = tokens["total"]["max"]
    metrics["dropped"] = stats["dropped"]
    return metrics


def dedup(keeps: list[Any], combined: Any) -> list[Any]:
    """Each source's kept row indices without rows whose prompt hash was seen earlier (in any source).

    About 30 bytes per row at the peak (hashes, a stable argsort, a mask), freed on return.
    """
    import numpy as np

    kept = np.concatenate(keeps)
    keys = combined.data.column("_key").to_numpy()[kept]
    by_key = np.argsort(keys, kind="stable")  # equal hashes keep their row order: the first one wins
    sorted_keys = keys[by_key]
    del keys
    first = np.empty(sorted_keys.size, dtype=bool)
    first[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    del sorted_keys
    unique = by_key[first]
    del by_key, first
    unique.sort()
    bounds = np.cumsum([0] + [k.size for k in keeps])
    cuts = np.searchsorted(unique, bounds)
    return [kept[unique[cuts[i] : cuts[i + 1]]] for i in range(len(keeps))]


def save_splits(files: list[str], splits: dict[str, Any], columns: list[str], out: Path, task: Any) -> None:
    """Write the splits in ``save_to_disk``'s layout with memory that does not grow with the rows.

    ``Dataset.save_to_disk`` on a shuffled selection gathers rows at random from memory-mapped tables, and
    every page it touches stays resident in the process: it grows by the size of the data. Here the rows
    are read sequentially (plain reads, not maps) and scattered into bucket files by output position, then
    each bucket is put in order in memory and appended: two sequential passes, one bucket in memory.
    The result loads with ``datasets.load_from_disk``.
    """
    import dataclasses

    import datasets
    from datasets.arrow_writer import ArrowWriter

    out.mkdir(parents=True)
    features = datasets.Dataset.from_file(files[0]).select_columns(columns).features
    for name, order in splits.items():
        (out / name).mkdir()
        filename = "data-00000-of-00001.arrow"
        writer = ArrowWriter(features=features, path=str(out / name / filename))
        for table in ordered_buckets(files, order, columns, out / name):
            writer.write_table(table)
            task.advance(table.num_rows)
        writer.finalize()
        written = datasets.Dataset.from_file(str(out / name / filename))
        state = {
            key: written.__dict__[key]
            for key in ("_fingerprint", "_format_columns", "_format_kwargs", "_format_type", "_output_all_columns")
        }
        state.update(_split=None, _data_files=[{"filename": filename}])
        (out / name / datasets.config.DATASET_STATE_JSON_FILENAME).write_text(json.dumps(state, indent=2, sort_keys=True))
        info = dataclasses.asdict(written._info)
        (out / name / datasets.config.DATASET_INFO_FILENAME).write_text(json.dumps(dict(sorted(info.items())), indent=2))
        del written
    (out / datasets.config.DATASETDICT_JSON_FILENAME).write_text(json.dumps({"splits": list(splits)}))


def ordered_buckets(files: list[str], order: Any, columns: list[str], tmp_dir: Path) -> Iterator[Any]:
    """Tables of the rows ``order`` names (global row numbers over ``files``), in that order, a bucket at a time."""
    import numpy as np
    import pyarrow as pa

    by_row = np.argsort(order, kind="stable")  # output positions, by the row they take
    rows = order[by_row]
    buckets = max(1, -(-order.size // BUCKET_ROWS))
    paths = [tmp_dir / f".bucket-{b}.arrow" for b in range(buckets)]
    writers: dict[int, Any] = {}
    base = 0
    try:
        for file in files:
            with pa.OSFile(file) as source:
                for batch in pa.ipc.open_stream(source):
                    lo, hi = np.searchsorted(rows, [base, base + batch.num_rows])
                    if hi > lo:
                        picked = batch.select(columns).take(pa.array(rows[lo:hi] - base))
                        positions = by_row[lo:hi]
                        bucket_of = positions // BUCKET_ROWS
                        for b in np.unique(bucket_of):
                            mask = bucket_of == b
                            part = picked.filter(pa.array(mask)).append_column("_pos", pa.array(positions[mask]))
                            if b not in writers:
                                writers[b] = pa.ipc.new_stream(str(paths[b]), part.schema)
                            writers[b].write_batch(part)
                    base += batch.num_rows
    finally:
        for w in writers.values():
            w.close()
    del by_row, rows
    for b, path in enumerate(paths):
        if b not in writers:
            continue
        with pa.OSFile(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
        path.unlink()
        table = table.take(pa.array(np.argsort(table.column("_pos").to_numpy()))).drop_columns(["_pos"])
        yield table.replace_schema_metadata(None)


def _sample(keep: Any, source: SourceOptions, rng: Any) -> Any:
    """Apply a source's sample cap or weight to its kept row indices (seeded)."""
    import numpy as np

    n = keep.size
    if source.max_rows is not None and n > source.max_rows:
        return np.sort(rng.choice(keep, source.max_rows, replace=False))
    if source.weight is not None and n > 0:  # nothing left to weight: the empty source stays empty
        target = int(round(source.weight * n))
        repeats, rest = divmod(target, n)
        parts = [keep] * repeats + [np.sort(rng.choice(keep, rest, replace=False))]
        return np.concatenate(parts)
    return keep


def _percentiles(values: Any) -> dict[str, Any]:
    import numpy as np

    if values.size == 0:
        return {}
    out = {f"p{p}": int(np.percentile(values, p, method="higher")) for p in PERCENTILES}
    out["max"] = int(values.max())
    out["mean"] = round(float(values.mean()), 1)
    return out


def _reasons_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])) or "no reason"

"""Mapping one batch of source rows to canonical rows: adapter, empty-field checks, prompt hash, token counts.

Runs inside the map workers; pure functions of a batch, so the result does not depend on how rows are
split into batches or workers (a batch always holds whole groups: ``workers`` never splits one).

A batch's source rows become its *mapped rows*, in order: the rows the adapter made from each source row
(or group), and one placeholder (a drop reason, no content) for every source row dropped before or by the
adapter. An adapter that makes one row per source row thus makes exactly one mapped row per source row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sakura_data.adapters import Adapter, Skip
from sakura_data.contract import Result, Row, WrongType

HELPER_COLUMNS = ("_drop", "_key", "_prompt_len", "_len")
NO_ROWS = "adapter made no rows"
PLACEHOLDER = [{"role": "user", "content": ""}]


class AdapterFailed(Exception):
    """An adapter raised something other than ``Skip`` (a bug): ``row`` is the source row (0-based in the
    source) it was given, a group's first row; the adapter's exception is the ``__cause__``."""

    def __init__(self, row: int):
        super().__init__(row)
        self.row = row


class RowRejected(Exception):
    """A source row holds a value of the wrong type (the adapter raised ``WrongType``): ``row`` is its 0-based
    position in the source (a group's first row), the message says which value."""

    def __init__(self, row: int, message: str):
        super().__init__(message)
        self.row = row


@dataclass
class Mapped:
    """The mapped rows of a batch."""

    columns: dict[str, list[Any]]  # canonical columns and HELPER_COLUMNS, one entry per mapped row
    units: list[int] = field(default_factory=list)  # per mapped row: the first mapped row of its source row or group
    made: int = 0  # rows the adapter made (the other mapped rows are placeholders of dropped source rows)

    def drop(self, reason: str) -> None:
        """A placeholder row, dropped for ``reason``."""
        for c in self.columns:
            if c not in HELPER_COLUMNS:
                self.columns[c].append(PLACEHOLDER)
        self.columns["_key"].append(0)
        self.columns["_drop"].append(reason)


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


def canonical_columns(fmt: str) -> tuple[str, ...]:
    return ("messages",) if fmt == "sft" else ("prompt", "chosen", "rejected")


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and not (value.strip() if isinstance(value, str) else value))


def _prompt_key(messages: list[dict[str, str]]) -> int:
    """64-bit hash of the normalized prompt: case and whitespace folded."""
    text = "\x00".join(" ".join(m["content"].lower().split()) for m in messages)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def group_keys(batch: dict[str, list[Any]], group_by: tuple[str, ...] | list[str]) -> list[tuple[Any, ...]]:
    """Each row's values of the ``group_by`` columns."""
    return list(zip(*(batch[c] for c in group_by)))


def units(batch: dict[str, list[Any]], group_by: tuple[str, ...], n: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of what ``run`` receives at a time: a row, or with ``group_by`` consecutive rows equal
    on those columns."""
    if not group_by:
        return ((r, r + 1) for r in range(n))
    keys = group_keys(batch, group_by)
    starts = [0, *(r for r in range(1, n) if keys[r] != keys[r - 1])]
    return zip(starts, [*starts[1:], n])


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
    first_row: int = 0,
) -> Mapped:
    """Map a batch of source rows (``first_row`` is the first one's row in the source, for error messages) to
    canonical rows plus helper columns (drop reason, prompt hash, lengths)."""
    n = len(batch[present[0]])
    mapped = Mapped({c: [] for c in (*canonical_columns(fmt), *HELPER_COLUMNS)})
    for start, stop in units(batch, adapter.group_by, n):
        unit = len(mapped.units)
        rows = [{c: batch[c][r] for c in present} for r in range(start, stop)]
        map_unit(rows, first_row + start, mapped, adapter=adapter, adapter_options=adapter_options, required=required, fmt=fmt)
        mapped.units += [unit] * (len(mapped.columns["_drop"]) - unit)
    size = len(mapped.units)
    mapped.columns["_prompt_len"] = [0] * size
    mapped.columns["_len"] = [0] * size
    kept = [r for r, reason in enumerate(mapped.columns["_drop"]) if not reason]
    if tokenizer is not None and kept:
        count_tokens(mapped.columns, kept, fmt, tokenizer, max_length, max_prompt_length)
    return mapped


def map_unit(
    rows: list[Row], row: int, mapped: Mapped, *, adapter: Adapter, adapter_options: Any, required: list[str], fmt: str
) -> None:
    """Append the mapped rows of one source row, or of one group (``row``: its first row in the source)."""
    complete = []
    for source_row in rows:  # rows with a null or empty required field never reach the adapter
        reason = next((f"null or empty {c}" for c in required if _empty(source_row[c])), "")
        if reason:
            mapped.drop(reason)
        else:
            complete.append(source_row)
    if not complete:
        return
    try:
        made = made_rows(adapter.run(complete if adapter.group_by else complete[0], adapter_options), fmt)
    except Skip as skip:
        for _ in complete:  # one placeholder per source row: "dropped" counts source rows for the adapter's reasons
            mapped.drop(str(skip) or "skipped by adapter")
        return
    except WrongType as wrong:
        raise RowRejected(row, str(wrong)) from None
    except Exception as exc:
        raise AdapterFailed(row) from exc
    if not made:
        for _ in complete:
            mapped.drop(NO_ROWS)
    mapped.made += len(made)
    for canonical in made:
        add_row(mapped, canonical, fmt)


def made_rows(result: Result, fmt: str) -> list[Row]:
    """The canonical rows of what ``run`` returned (a row, an iterable of rows or None), checked for shape:
    a malformed row is the adapter's bug, reported at the row it came from."""
    rows = [] if result is None else [result] if isinstance(result, dict) else list(result)
    for canonical in rows:
        if not isinstance(canonical, dict):
            raise TypeError(f"the adapter made a {type(canonical).__name__}, not a row (a dict)")
        for c in canonical_columns(fmt):
            messages = canonical.get(c)
            if not isinstance(messages, list) or not all(_is_message(m) for m in messages):
                raise TypeError(f"the adapter made a row whose {c!r} is not a list of {{role, content}} messages")
    return rows


def _is_message(message: Any) -> bool:
    return (
        isinstance(message, dict) and isinstance(message.get("role"), str)
        and (message.get("content") is None or isinstance(message["content"], str))
    )


def add_row(mapped: Mapped, canonical: Row, fmt: str) -> None:
    """Append a row the adapter made; a row with an empty message is dropped."""
    columns = canonical_columns(fmt)
    if any(not canonical[c] for c in columns) or any(not m["content"] for c in columns for m in canonical[c]):
        mapped.drop("empty message")
        return
    for c in columns:
        mapped.columns[c].append(canonical[c])
    prompt = canonical["prompt"] if fmt != "sft" else _sft_prompt(canonical["messages"])
    mapped.columns["_key"].append(_prompt_key(prompt))
    mapped.columns["_drop"].append("")


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

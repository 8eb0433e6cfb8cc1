"""Mapping one batch of source rows to canonical rows: adapter, empty-field checks, prompt hash, token counts.

Runs inside the map workers; pure functions of a batch, so the result does not depend on how rows are
split into batches or workers.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sakura_data.adapters import Adapter, Skip

HELPER_COLUMNS = ("_drop", "_key", "_prompt_len", "_len")


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
                converted = adapter.run(row, adapter_options)
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

"""``ultrafeedback``: a dataset adapter for HuggingFaceH4/ultrafeedback_binarized, in one class.

The dataset's preference splits (``train_prefs``, ``test_prefs``) hold, per row, a ``prompt`` string and two
conversations, ``chosen`` and ``rejected`` (lists of ``{"content", "role"}`` messages: the user's turn, then
the assistant's answer), with their ratings ``score_chosen`` and ``score_rejected``. trl's conversational
preference format wants the conversation before the answers as ``prompt`` and each answer alone as
``chosen`` / ``rejected``: the adapter splits the last assistant turn off each conversation.

A row that does not fit is dropped with a reason (``Skip``), counted in the dataset's ``stats.json``;
rows with a null or empty ``prompt``, ``chosen`` or ``rejected`` never reach the adapter (sakura drops
them first), and nor do rows with an empty message after the mapping. A source without the columns fails
before any row is read.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sakura_core.options import Options
from sakura_data import Adapter, Skip

ROLES = ("system", "user", "assistant")


class UltraFeedbackOptions(Options):
    min_score_margin: float | None = Field(
        None, ge=0, description="keep rows with score_chosen - score_rejected >= this (ties score 0)"
    )


def _conversation(value: Any, column: str) -> list[dict[str, str]]:
    """A column's message list, checked: every message a dict with a known role and text content."""
    if not isinstance(value, list):
        raise Skip(f"malformed {column}: not a list of messages")
    turns = []
    for message in value:
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise Skip(f"malformed {column}: a message without a known role and text content")
        turns.append({"role": message["role"], "content": message["content"].strip()})
    if not turns or turns[-1]["role"] != "assistant":
        raise Skip(f"{column} does not end with an assistant message")
    return turns


def _score(value: Any, column: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Skip(f"{column} is not a number") from None


class UltraFeedbackAdapter(Adapter):
    """HuggingFaceH4/ultrafeedback_binarized (``train_prefs`` / ``test_prefs``): prompt, chosen, rejected."""

    description = "HuggingFaceH4/ultrafeedback_binarized layout (*_prefs splits), optional min_score_margin"
    Options = UltraFeedbackOptions
    columns = ("prompt", "chosen", "rejected")
    version = "1"  # bump when the output for the same input changes: it is part of the stage's fingerprint

    def required_columns(self, options: UltraFeedbackOptions, found: list[str]) -> list[str]:
        columns = list(self.columns)
        if options.min_score_margin is not None:
            columns += ["score_chosen", "score_rejected"]
        return columns

    def run(self, row: dict[str, Any], options: UltraFeedbackOptions) -> dict[str, Any]:
        if options.min_score_margin is not None:
            margin = _score(row["score_chosen"], "score_chosen") - _score(row["score_rejected"], "score_rejected")
            if margin < options.min_score_margin:
                raise Skip(f"score margin below {options.min_score_margin:g}")
        chosen = _conversation(row["chosen"], "chosen")
        rejected = _conversation(row["rejected"], "rejected")
        # The turns before the answer; a conversation holding only the answer takes the prompt column.
        prompt = chosen[:-1] or [{"role": "user", "content": str(row["prompt"]).strip()}]
        if rejected[:-1] and rejected[:-1] != prompt:
            raise Skip("chosen and rejected answer different prompts")
        if prompt[-1]["role"] != "user":
            raise Skip("the prompt does not end with a user message")
        if chosen[-1]["content"] == rejected[-1]["content"]:
            raise Skip("chosen equals rejected")  # a tie teaches DPO nothing
        return {"prompt": prompt, "chosen": chosen[-1:], "rejected": rejected[-1:]}

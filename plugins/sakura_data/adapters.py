"""The built-in dataset adapters: orca, math, toxic, columns (any preference layout) and messages (SFT chat).

The contract they follow, and third-party adapters with them, is ``sakura_data.contract``. This module is
imported by ``sakura validate``: it must stay cheap (pydantic only, no datasets).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sakura_core.options import Options
from sakura_data.contract import Adapter, Skip, WrongType, kind_of, preference, text


# -- built-ins --------------------------------------------------------------------------------------
class OrcaOptions(Options):
    system: bool = True
    """Put a non-empty ``system`` column first in the prompt (the Sakura-SOLAR runs left it out: ``false``)."""


class OrcaAdapter(Adapter):
    """Intel/orca_dpo_pairs: system, question, chosen, rejected (``rejected`` starts with a space)."""

    description = "Intel/orca_dpo_pairs layout: system (optional), question, chosen, rejected"
    Options = OrcaOptions
    columns = ("question", "chosen", "rejected")

    def optional(self, options: OrcaOptions) -> list[str]:
        return ["system"] if options.system else []

    def run(self, row: dict[str, Any], options: OrcaOptions) -> dict[str, Any]:
        system = text(row.get("system"), "system") if options.system else None
        return preference(*texts(row, "question", "chosen", "rejected"), system)


class MathOptions(Options):
    min_rating_margin: float | None = Field(None, ge=0)
    """Drop rows whose ``chosen_rating`` minus ``rejected_rating`` is below this; when set, both rating columns
    are required."""


class MathAdapter(Adapter):
    """argilla/distilabel-math-preference-dpo: instruction, chosen_response, rejected_response (+ ratings)."""

    description = "argilla/distilabel-math-preference-dpo layout, optional min_rating_margin"
    Options = MathOptions
    columns = ("instruction", "chosen_response", "rejected_response")

    def required_columns(self, options: MathOptions, found: list[str]) -> list[str]:
        cols = list(self.columns)
        if options.min_rating_margin is not None:
            cols += ["chosen_rating", "rejected_rating"]
        return cols

    def run(self, row: dict[str, Any], options: MathOptions) -> dict[str, Any]:
        if options.min_rating_margin is not None:
            margin = float(row["chosen_rating"]) - float(row["rejected_rating"])
            if margin < options.min_rating_margin:
                raise Skip(f"rating margin below {options.min_rating_margin:g}")
        return preference(*texts(row, "instruction", "chosen_response", "rejected_response"))


class ToxicAdapter(Adapter):
    """unalignment/toxic-dpo-v0.1: prompt, chosen, rejected (an ``id`` column may exist and is ignored)."""

    description = "unalignment/toxic-dpo-v0.1 layout: prompt, chosen, rejected"
    columns = ("prompt", "chosen", "rejected")

    def run(self, row: dict[str, Any], options: Any) -> dict[str, Any]:
        return preference(*texts(row, "prompt", "chosen", "rejected"))


class ColumnsOptions(Options):
    prompt: str = "prompt"
    """Column holding the prompt: a string (one user message) or a list of ``{role, content}`` messages."""
    chosen: str = "chosen"
    """Column holding the preferred answer: a string (one assistant message) or a list of messages."""
    rejected: str = "rejected"
    """Column holding the dispreferred answer: a string (one assistant message) or a list of messages."""
    system: str | None = None
    """Column holding a system message to put before the prompt (rows where it is empty get none); unset: no
    system message."""


def _messages_or_text(value: Any, role: str, column: str) -> list[dict[str, str]]:
    if isinstance(value, list):  # already a message list (trl's conversational format)
        if not all(isinstance(m, dict) for m in value):
            raise WrongType(f"{column} is a list of something other than {{role, content}} messages")
        return [{"role": text(m.get("role", role), f"{column}[{i}].role") or role,
                 "content": text(m.get("content"), f"{column}[{i}].content")} for i, m in enumerate(value)]
    if not isinstance(value, str):
        raise WrongType(f"{column} is {kind_of(value)}, not text or a list of messages")
    return [{"role": role, "content": text(value, column)}]


class ColumnsAdapter(Adapter):
    """Any preference layout: name the prompt / chosen / rejected (/ system) columns yourself.

    A column may hold plain strings or message lists ({"role", "content"}).
    """

    description = "your own columns: prompt, chosen, rejected, system = column names"
    Options = ColumnsOptions

    def required_columns(self, options: ColumnsOptions, found: list[str]) -> list[str]:
        return [options.prompt, options.chosen, options.rejected]

    def optional(self, options: ColumnsOptions) -> list[str]:
        return [options.system] if options.system else []

    def run(self, row: dict[str, Any], options: ColumnsOptions) -> dict[str, Any]:
        prompt = _messages_or_text(row[options.prompt], "user", options.prompt)
        system = text(row.get(options.system), options.system) if options.system else ""
        if system:
            prompt = [{"role": "system", "content": system}] + prompt
        return {
            "prompt": prompt,
            "chosen": _messages_or_text(row[options.chosen], "assistant", options.chosen),
            "rejected": _messages_or_text(row[options.rejected], "assistant", options.rejected),
        }


ROLE_NAMES = {
    "system": "system", "user": "user", "human": "user", "prompter": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
}


class MessagesOptions(Options):
    column: str | None = None
    """Column holding the conversation; unset: ``messages`` (``{role, content}``) when the data has it, else
    ``conversations`` (ShareGPT's ``{from, value}``)."""
    system: str | None = None
    """Column holding a system message to put first (rows where it is empty get none); unset: no added system
    message."""


class MessagesAdapter(Adapter):
    """SFT chat data: a ``messages`` ({"role","content"}) or ShareGPT ``conversations`` ({"from","value"}) column."""

    description = "SFT chat data: messages [{role, content}] or conversations [{from, value}]"
    format = "sft"
    Options = MessagesOptions

    def required_columns(self, options: MessagesOptions, found: list[str]) -> list[str]:
        if options.column:
            return [options.column]
        return ["conversations"] if "conversations" in found and "messages" not in found else ["messages"]

    def optional(self, options: MessagesOptions) -> list[str]:
        return [options.system] if options.system else []

    def run(self, row: dict[str, Any], options: MessagesOptions) -> dict[str, Any]:
        column = options.column or ("messages" if "messages" in row else "conversations")
        messages = []
        system = text(row.get(options.system), options.system) if options.system else ""
        if system:
            messages.append({"role": "system", "content": system})
        if not isinstance(row[column], list):
            raise WrongType(f"{column} is {kind_of(row[column])}, not a list of messages")
        for turn in row[column]:
            if not isinstance(turn, dict):
                raise Skip("malformed message")
            role = turn.get("role", turn.get("from"))
            content = turn.get("content", turn.get("value"))
            mapped = ROLE_NAMES.get(str(role).lower()) if role is not None else None
            if mapped is None:
                raise Skip(f"unknown role {role!r}")
            messages.append({"role": mapped, "content": text(content, f"{column} message content")})
        if not any(m["role"] == "assistant" for m in messages):
            raise Skip("no assistant message")
        return {"messages": messages}


def texts(row: dict[str, Any], *columns: str) -> list[str]:
    """The row's text in ``columns``, each checked to be a string (``WrongType`` naming the column)."""
    return [text(row[c], c) for c in columns]


BUILTIN_ADAPTERS: dict[str, Adapter] = {
    "orca": OrcaAdapter(),
    "math": MathAdapter(),
    "toxic": ToxicAdapter(),
    "columns": ColumnsAdapter(),
    "messages": MessagesAdapter(),
}

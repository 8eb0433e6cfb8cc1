"""How the reference docs render a dataset adapter."""

from __future__ import annotations

from typing import Any

from sakura_core.reference import Writer, credits, options_of, sentence


def render_adapter(w: Writer, entry: Any) -> None:
    adapter = entry.implementation
    columns = ", ".join(f"`{c}`" for c in adapter.columns)
    text = f"{sentence(adapter.summary())} Makes {adapter.format} rows" + (f" from the columns {columns}" if columns else "") + "."
    if adapter.group_by:
        text += " Reads groups of consecutive rows with equal " + ", ".join(f"`{c}`" for c in adapter.group_by) + "."
    w.add(" ".join(t for t in (text, credits(entry)) if t) + "\n")
    model = options_of(adapter)
    if model is not None and model.model_fields:
        w.add("Options, in the source's `options` table:\n")
        w.options(model, "options.")

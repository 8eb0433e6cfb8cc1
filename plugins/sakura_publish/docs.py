"""How the reference docs render a publisher."""

from __future__ import annotations

from typing import Any

from sakura_core.reference import Writer, credits, options_of, own_doc, sentence


def render_publisher(w: Writer, entry: Any) -> None:
    publisher = entry.implementation
    model = options_of(publisher)
    intro = own_doc(model) if model is not None and own_doc(model) else sentence(publisher.summary())
    w.add(" ".join(t for t in (intro, credits(entry)) if t) + "\n" if intro or credits(entry) else "")
    if model is not None:
        w.add("Keys, beside `publisher` and `model` in the publish stage's table:\n")
        w.options(model)

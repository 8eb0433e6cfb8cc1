"""How the reference docs render an evaluator: what it measures, the inputs it reads, its options."""

from __future__ import annotations

from typing import Any

from sakura_core.reference import Writer, credits, options_of, sentence, table


def render_evaluator(w: Writer, entry: Any) -> None:
    evaluator = entry.implementation
    text = sentence(evaluator.summary())
    if evaluator.needs_chat_template:
        text += " The model must have a chat template."
    w.add(" ".join(t for t in (text, credits(entry)) if t) + "\n")
    if evaluator.inputs:
        rows = [[f"`inputs.{key}`", "needed" if key in evaluator.required_inputs else "optional", meaning]
                for key, meaning in evaluator.inputs.items()]
        w.add("Inputs, in the eval stage's `inputs` table:\n", table(["key", "", "what it names"], rows))
    model = options_of(evaluator)
    if model is not None and model.model_fields:
        w.add("Options, in the eval stage's `options` table:\n")
        w.options(model, "options.")

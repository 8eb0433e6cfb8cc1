"""How the reference docs (docs/recipes.md, ``sakura plugins --reference``) render a merge method."""

from __future__ import annotations

from typing import Any

from sakura_core.reference import Row, Writer, credits, field_default, field_meaning, field_type, sentence, table


def render_method(w: Writer, entry: Any) -> None:
    method = entry.implementation
    bits = [sentence(method.summary()), f"Base model: {method.base}."]
    least, most = method.min_models, method.max_models
    count = f"at least {least}" if most is None else f"exactly {most}" if most == least else f"{least} to {most}"
    bits.append(f"Models: {count}.")
    least, most = getattr(method, "non_base", (None, None))  # the bridge's methods that count non-base models
    if least is not None:
        bits.append(f"Models besides the base: {f'exactly {least}' if least == most else f'at least {least}'}.")
    bits.append("Runs on sakura's executor." if method.native else "Runs through mergekit's executor.")
    if method.randomized:
        bits.append("Randomized: set `seed` for a reproducible result, mergekit's `--random-seed` result.")
    bits.append(credits(entry))
    w.add(" ".join(b for b in bits if b) + "\n")
    model = method.Options
    if not model.model_fields:
        w.add("No parameters.\n")
        return
    rows = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        per_model = key in method.per_model or name in method.per_model
        default = "required" if (key in method.required or name in method.required) else field_default(info)
        row = Row(key, field_type(info), default, field_meaning(model, name), model, name)
        w.rows.append(row)
        scope = "all models"
        if per_model:
            scope = "each model but the base" if method.per_model_scope == "non_base" else "each model"
        rows.append([f"`{key}`", scope, row.type, row.default, row.meaning])
    w.add(table(["parameter", "set for", "type", "default", "meaning"], rows))

"""How the reference docs render a trainer."""

from __future__ import annotations

from typing import Any

from sakura_core.reference import Writer, credits, table, toml_text


def render_trainer(w: Writer, entry: Any) -> None:
    trainer = entry.implementation
    config, trainer_class = trainer.config_class, trainer.trainer_class
    if ":" in config:
        config_text = f"`{config}`"
    else:
        page = config.removesuffix("Config").lower()
        config_text = f"trl's [`{config}`](https://huggingface.co/docs/trl/{page}_trainer#trl.{config})"
    columns = ", ".join(f"`{c}`" for c in trainer.columns)
    text = f"`args` are fields of {config_text}; runs `{trainer_class}` on rows with {columns}."
    if trainer.preference:
        text += " Uses a reference model, so `ref_cache` applies."
    w.add(" ".join(t for t in (text, credits(entry)) if t) + "\n")
    if trainer.defaults:
        w.add("sakura's defaults, which `args` override:\n",
              table(["arg", "default"], [[f"`{k}`", f"`{toml_text(v)}`"] for k, v in trainer.defaults.items()]))

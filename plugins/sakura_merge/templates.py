"""``chat_template``: mergekit's rules for the value (checked before any work) and for the template it sets.

A value is ``auto`` (the most common template among the input models), the name of a template mergekit
ships (``chatml``, ``llama3``, ...), or a Jinja template (at least 20 characters, with a ``{``); mergekit
refuses anything else, after the merge: sakura refuses it when the configuration is checked.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

MIN_TEMPLATE_LENGTH = 20  # mergekit's bound: shorter text without a name is "Invalid chat template"


def template_names() -> list[str]:
    """The names of the templates mergekit ships (its package's ``_data/chat_templates/*.jinja``)."""
    import importlib.resources

    folder = importlib.resources.files("mergekit._data.chat_templates")
    return sorted(entry.name.removesuffix(".jinja") for entry in folder.iterdir() if entry.name.endswith(".jinja"))


def _looks_like_name(value: str) -> bool:
    return len(value) < 256 and "\n" not in value and "{" not in value


def chat_template_problem(value: str) -> Optional[str]:
    """Why mergekit would refuse this ``chat_template`` value, or None."""
    if value == "auto":
        return None
    if _looks_like_name(value):
        names = template_names()
        if value in names:
            return None
        from sakura_core.errors import did_you_mean

        return f"unknown template name {value!r}{did_you_mean(value, names)} (known: auto, {', '.join(names)}, or a Jinja template)"
    if len(value) < MIN_TEMPLATE_LENGTH or "{" not in value:
        return f"not a template name nor a Jinja template (at least {MIN_TEMPLATE_LENGTH} characters with a '{{')"
    return None


def resolve_chat_template(value: str, tokenizer_dirs: list[Path], trust_remote_code: bool = False) -> Optional[str]:
    """The template text for a checked value; None for ``auto`` when no input model has a template (mergekit
    then leaves the tokenizer's own)."""
    if value == "auto":
        return _most_common_template(tokenizer_dirs, trust_remote_code)
    if _looks_like_name(value):
        import importlib.resources

        return importlib.resources.files("mergekit._data.chat_templates").joinpath(value + ".jinja").read_text()
    return value


def _most_common_template(tokenizer_dirs: list[Path], trust_remote_code: bool) -> Optional[str]:
    from transformers import AutoTokenizer

    found = []
    for path in tokenizer_dirs:
        template = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code).chat_template
        if isinstance(template, dict):
            template = template.get("default")
        if template:
            found.append(template.strip())
    return Counter(found).most_common(1)[0][0] if found else None

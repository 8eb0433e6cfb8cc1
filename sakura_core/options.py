"""Options models: what every plugin validates its part of a recipe with, and how mistakes are reported.

A plugin's options model subclasses ``Options`` (pydantic; unknown keys are errors). ``validate_options``
turns a pydantic error into one ``OptionError`` naming the key path: ``args.learnin_rate: unknown option
(did you mean learning_rate?)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from sakura_core.errors import OptionError, did_you_mean, join_key


class Options(BaseModel):
    """Base for every plugin's options model: unknown keys are errors, values are validated as given."""

    # defer_build: a schema is built on first validation, not at import; most models a CLI start imports
    # (every merge method's, every adapter's) are never used by the recipe at hand.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    # Said after "unknown option" when no key is close: where such a key belongs instead.
    unknown_key_hint: ClassVar[str] = ""


class NoOptions(Options):
    """Takes no options."""


def validate_options(model: type[BaseModel] | None, raw: Any, key_prefix: str = "") -> Any:
    """Validate ``raw`` with a plugin's options model, raising ``OptionError`` with a key path. ``None`` (an
    implementation whose ``Options`` is unset) takes no options: ``NoOptions``.

    Plugins use this for nested options (a merge method's parameters, an adapter's options).
    """
    model = model or NoOptions
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [part for part in error["loc"] if part != "__root__"]
        key = join_key(key_prefix, *loc)
        raise OptionError(key or None, describe_error(error, model, loc)) from None


def describe_error(error: dict[str, Any], model: type[BaseModel], loc: list[Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        fields, at = _fields_at(model, loc[:-1])
        hint = did_you_mean(str(loc[-1]), fields)
        if not hint and getattr(at, "unknown_key_hint", ""):
            hint = f" ({at.unknown_key_hint})"
        return f"unknown option{hint}"
    if kind == "missing":
        return "missing required option"
    message = error["msg"].removeprefix("Value error, ")  # a validator's own message reads as written
    message = message[0].lower() + message[1:]
    if "input" in error and not isinstance(error["input"], (dict, list)):
        message += f" (got {error['input']!r})"
    return message


def _fields_at(model: type[BaseModel], loc: list[Any]) -> tuple[list[str], Any]:
    """Field names of the (nested) model at ``loc``, for suggestions, and that model."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        current = _model_of(field.annotation) if field else None
    fields = getattr(current, "model_fields", {}) if current is not None else {}
    names = []
    for name, field in fields.items():
        names.append(name)
        if field.alias:
            names.append(field.alias)
    return names, current


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None

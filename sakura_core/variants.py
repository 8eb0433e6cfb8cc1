"""Variants: one recipe file declaring a family of recipes that differ in a few keys.

A recipe may hold ``[variants.NAME]`` tables of overrides, written with the dotted keys of ``-s``
(``"stages.dpo.args.learning_rate" = 1e-6``), and a ``[matrix]`` table (key -> list of values) whose
product makes variants; with both, every named variant is combined with every point of the matrix. Each
variant is the whole recipe with its overrides applied, then ``{variant}`` in any string replaced by its
name (``repo_id = "me/Sakura-SOLAR-{variant}"``), validated as a whole before any work. A recipe with
neither is one recipe, as before.

Stages that are the same in several variants have the same fingerprint, so the shared store computes
them once (``sakura_core.family`` schedules them first).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from sakura_core.errors import RecipeError

PLACEHOLDER = "{variant}"
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True)
class Variant:
    """One member of a family: its name and the overrides (dotted key -> value) that make it."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def changes(self) -> list[str]:
        """The overrides as ``-s`` would write them (for the recipe-as-run header)."""
        from sakura_core.tomltext import _value

        return [f"{key}={_value(value)}" for key, value in self.overrides.items()]


def declared(data: dict[str, Any], file: str) -> list[Variant] | None:
    """The variants a recipe declares (named ones combined with the matrix), or None when it declares none."""
    named_raw = data.get("variants")
    matrix_raw = data.get("matrix")
    if named_raw is None and matrix_raw is None:
        return None
    for key, raw in (("variants", named_raw), ("matrix", matrix_raw)):
        if raw is not None and not isinstance(raw, dict):
            raise RecipeError("must be a table", file=file, key=key)
    named = _named(named_raw or {}, file)
    points = _matrix(matrix_raw or {}, file)
    if not named:
        return points
    if len(points) == 1 and not points[0].overrides:
        return named
    combined = []
    for base, point in itertools.product(named, points):
        combined.append(Variant(f"{base.name}_{point.name}", {**base.overrides, **point.overrides}))
    return combined


def _named(raw: dict[str, Any], file: str) -> list[Variant]:
    variants = []
    for name, table in raw.items():
        key = f"variants.{name}"
        if not VARIANT_NAME.match(name):
            raise RecipeError("variant names are letters, digits, '.', '_' and '-'", file=file, key=key)
        if not isinstance(table, dict):
            raise RecipeError('must be a table of overrides ("stages.dpo.args.learning_rate" = 1e-6)', file=file, key=key)
        overrides = {}
        for dotted, value in _flatten(table):
            if not KEY.match(dotted) or not dotted.startswith(("stages.", "models.", "name", "description")):
                raise RecipeError(f"{dotted!r} is not a recipe key to override (e.g. \"stages.dpo.args.learning_rate\")",
                                  file=file, key=key)
            overrides[dotted] = value
        variants.append(Variant(name, overrides))
    return variants


def _flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted keys as written (``"stages.dpo.lora" = { r = 8 }`` replaces the whole table); tables nested with
    unquoted keys (``[variants.a.stages.dpo.args]``) set their keys one by one."""
    out = []
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and "." not in key:
            out += _flatten(value, f"{dotted}.")
        else:
            out.append((dotted, value))
    return out


def _matrix(raw: dict[str, Any], file: str) -> list[Variant]:
    if not raw:
        return [Variant("", {})]
    keys, values = [], []
    for dotted, options in raw.items():
        key = f"matrix.{json.dumps(dotted) if '.' in dotted else dotted}"
        if not KEY.match(dotted) or not dotted.startswith(("stages.", "models.")):
            raise RecipeError("matrix keys are recipe keys to override (e.g. \"stages.dpo.args.learning_rate\")",
                              file=file, key=key)
        if not isinstance(options, list) or not options:
            raise RecipeError("must be a non-empty list of values, one per variant", file=file, key=key)
        keys.append(dotted)
        values.append(options)
    points = []
    for combo in itertools.product(*values):
        name = "_".join(f"{k.rsplit('.', 1)[-1]}-{_slug(v)}" for k, v in zip(keys, combo))
        points.append(Variant(name, dict(zip(keys, combo))))
    return points


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "x"


def apply(data: dict[str, Any], variant: Variant, file: str) -> dict[str, Any]:
    """A copy of the recipe's data with the variant's overrides set and ``{variant}`` replaced by its name."""
    import copy

    out = copy.deepcopy({k: v for k, v in data.items() if k not in ("variants", "matrix")})
    for dotted, value in variant.overrides.items():
        parts = dotted.split(".")
        table = out
        for i, part in enumerate(parts[:-1]):
            node = table.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"variant {variant.name}: cannot set {dotted}: {'.'.join(parts[:i + 1])} is not a table",
                                  file=file, key=f"variants.{variant.name}")
            table = node
        table[parts[-1]] = copy.deepcopy(value)
    return _substitute(out, variant.name)


def _substitute(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value.replace(PLACEHOLDER, name)
    if isinstance(value, list):
        return [_substitute(v, name) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, name) for k, v in value.items()}
    return value


def uses_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return PLACEHOLDER in value
    if isinstance(value, list):
        return any(uses_placeholder(v) for v in value)
    if isinstance(value, dict):
        return any(uses_placeholder(v) for v in value.values())
    return False

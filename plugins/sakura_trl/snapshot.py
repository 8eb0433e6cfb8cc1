"""Snapshot of trl's config classes (field names and value kinds), so ``sakura validate`` needs no trl import.

Regenerate after upgrading trl: ``python -m sakura_trl.snapshot`` (a test checks it matches the installed trl).
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("trl_config_fields.json")
CONFIG_CLASSES = {"DPOConfig": "trl.DPOConfig", "SFTConfig": "trl.SFTConfig"}


def _kinds(annotation: Any) -> list[str]:
    """The JSON/TOML value kinds a field accepts: bool, int, float, str, list, dict, null, any."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: list[str] = []
        for arg in typing.get_args(annotation):
            out += [k for k in _kinds(arg) if k not in out]
        return out
    if annotation is type(None):
        return ["null"]
    base = origin or annotation
    if base is bool:
        return ["bool"]
    if base is int:
        return ["int"]
    if base is float:
        return ["float", "int"]
    if base is str:
        return ["str"]
    if base in (list, tuple, typing.List):  # noqa: UP006
        return ["list"]
    if base in (dict, typing.Dict):  # noqa: UP006
        return ["dict"]
    if base is typing.Literal:
        return sorted({type(a).__name__ for a in typing.get_args(annotation)})
    if isinstance(base, type) and issubclass(base, str):  # enums derived from str
        return ["str"]
    return ["any"]


def describe_config(cls: type) -> dict[str, Any]:
    import dataclasses

    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        fields[f.name] = _kinds(hints.get(f.name, Any))
    return fields


def build_snapshot() -> dict[str, Any]:
    import importlib

    import trl

    out: dict[str, Any] = {"trl_version": trl.__version__, "configs": {}}
    for name, dotted in CONFIG_CLASSES.items():
        module, _, attr = dotted.rpartition(".")
        out["configs"][name] = describe_config(getattr(importlib.import_module(module), attr))
    return out


def load_snapshot() -> dict[str, Any]:
    return json.loads(SNAPSHOT.read_text())


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(build_snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")

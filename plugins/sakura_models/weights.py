"""Which weight files transformers loads from a model directory, so that the pickle check judges those.

``from_pretrained`` on a directory takes, in order: the file config.json's ``transformers_weights`` names;
``model.safetensors``; ``model.safetensors.index.json`` and its shards; ``pytorch_model.bin``;
``pytorch_model.bin.index.json`` and its shards. Any other ``*.safetensors`` beside them is ignored, so "has a
safetensors file" says nothing about what is loaded: a ``pytorch_model.bin`` with a stray ``extra.safetensors``
loads the pickle.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sakura_core.errors import StageError

# transformers' names, in its order of preference: (file, pickled)
CANDIDATES = (
    ("model.safetensors", False),
    ("model.safetensors.index.json", False),
    ("pytorch_model.bin", True),
    ("pytorch_model.bin.index.json", True),
)


@dataclass(frozen=True)
class Weights:
    chosen: str  # the file transformers picks (an index for sharded weights)
    files: list[str]  # the files it then reads (the shards of an index)
    pickled: bool


def chosen_name(names: Iterable[str], explicit: str | None = None) -> tuple[str, bool] | None:
    """(file transformers picks, pickled?) among a directory's (or a Hub repo's) file ``names``, or None."""
    if explicit:
        return explicit, not explicit.endswith((".safetensors", ".safetensors.index.json"))
    present = set(names)
    return next(((name, pickled) for name, pickled in CANDIDATES if name in present), None)


def weights_to_load(path: Path) -> Weights | None:
    """The weights ``from_pretrained`` reads from the directory ``path``, or None when it would find none (or
    there is no such directory: the caller says so)."""
    if not path.is_dir():
        return None
    explicit = _config(path).get("transformers_weights")
    picked = chosen_name((p.name for p in path.iterdir() if p.is_file()), explicit if isinstance(explicit, str) else None)
    if picked is None:
        return None
    name, pickled = picked
    files = _shards(path, name) if name.endswith(".index.json") else [name]
    return Weights(name, files, pickled)


def _config(path: Path) -> dict:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}  # a missing or broken config.json is reported by whoever reads it
    return config if isinstance(config, dict) else {}


def _shards(path: Path, index: str) -> list[str]:
    try:
        weight_map = json.loads((path / index).read_text())["weight_map"]
        return sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise StageError(f"{path}: {index} is not a readable index (no weight_map)") from None

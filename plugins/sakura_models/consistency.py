"""Does a model directory's config.json describe the weights beside it?

transformers builds the model from config.json and then loads the weights into it: a config that says more
layers than the weights hold gets randomly initialized layers (with a warning lost in a log), and a merge
planned from such a config goes ahead. These checks read only config.json and the safetensors headers (a few
kB, no torch), so they run when a recipe is validated.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict, or ValueError saying in words what is wrong with it."""
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError("config.json is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"config.json is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ValueError("config.json is not a JSON object")
    return data


def safetensors_header(file: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's header (tensor name -> ``{dtype, shape, data_offsets}``, without ``__metadata__``)
    and where its data starts; ValueError saying what is wrong when it is not a safetensors file."""
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > 100_000_000:
            raise ValueError(f"not a safetensors file (header of {length} bytes)")
        try:
            header = json.loads(f.read(length))
        except ValueError:
            raise ValueError("not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (unreadable header)")
    return {name: info for name, info in header.items() if name != "__metadata__"}, 8 + length


def tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the safetensors headers of ``files``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            header, _ = safetensors_header(file)
        except ValueError as exc:
            raise ValueError(f"{file.name}: {exc}") from None
        shapes.update({name: tuple(info.get("shape") or ()) for name, info in header.items() if isinstance(info, dict)})
    return shapes


def disagreement(config: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> str | None:
    """How config.json and the weights disagree (layers, hidden size, vocabulary), or None."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    layers = {int(m.group(1)) for name in shapes if (m := LAYER.search(name))}
    declared = text.get("num_hidden_layers")
    if layers and isinstance(declared, int) and declared != max(layers) + 1:
        return f"config.json says num_hidden_layers = {declared}, the weights hold {max(layers) + 1} layers"
    embed = next((shape for name, shape in shapes.items() if name.endswith("embed_tokens.weight")), None)
    if embed is not None and len(embed) == 2:
        rows, width = embed
        if isinstance(text.get("hidden_size"), int) and text["hidden_size"] != width:
            return f"config.json says hidden_size = {text['hidden_size']}, the embeddings are {rows} x {width}"
        if isinstance(text.get("vocab_size"), int) and text["vocab_size"] != rows:
            return f"config.json says vocab_size = {text['vocab_size']}, the embeddings have {rows} rows"
    return None

"""Read the input models' configs and safetensors headers, and plan every output tensor, before any work.

Every user mistake about the models (a missing directory, pickled weights, different architectures, a layer
range out of bounds, a tensor missing or shaped differently) is found here and named in one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sakura_merge.config import MergeConfig, Parameters
from sakura_merge.errors import MergeInputError

LAYER_RE = re.compile(r"^(.*?\b(?:layers|h|blocks|layer)\.)(\d+)\.(.+)$")
PRE_WORDS = ("embed", "wte", "wpe", "tok_embeddings")

ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
             "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
ST_CODES = {v: k for k, v in ST_DTYPES.items()}
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
            "uint8": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    file: Path
    dtype: str  # torch dtype name
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file; -1 inside a pickle (only mergekit's executor reads those)
    nbytes: int


@dataclass
class ModelInputs:
    name: str
    path: Path  # the weights' directory (for MODEL+LORA: the model with its LoRA applied)
    config: dict[str, Any]
    tensors: dict[str, TensorInfo]
    bin_only: bool = False

    @property
    def num_layers(self) -> int:
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(self.config.get(key), int):
                return self.config[key]
        text = self.config.get("text_config") or {}
        return int(text.get("num_hidden_layers", 0))


@dataclass
class OutTensor:
    name: str
    inputs: list[tuple[str, str]]  # (model, input tensor name), in model order
    slice_index: int
    t: float
    shape: tuple[int, ...]
    in_dtypes: list[str]


@dataclass
class SliceLayout:
    sources: list[tuple[str, int, int]]  # (model, start, end)
    base: Optional[str]
    parameters: Optional[Parameters]
    source_parameters: list[Optional[Parameters]]
    module_parameters: Optional[Parameters] = None  # the parameters of the module the slice is in


@dataclass
class Layout:
    models: dict[str, ModelInputs]
    slices: list[SliceLayout]
    tensors: list[OutTensor] = field(default_factory=list)
    donor: str = ""  # the model whose config and tokenizer the output takes (mergekit's rule: base, else the first)
    origins: dict[str, Path] = field(default_factory=dict)  # every reference's own directory (config, tokenizer)

    def output_layer_sources(self) -> list[tuple[str, int]]:
        out = []
        for s in self.slices:
            model, start, end = s.sources[0]
            out.extend((model, i) for i in range(start, end))
        return out


# -- safetensors ------------------------------------------------------------------------------------
def read_header(path: Path) -> dict[str, TensorInfo]:
    from sakura_models.consistency import safetensors_header

    try:
        header, base = safetensors_header(path)
    except ValueError as exc:
        raise MergeInputError(f"{path}: {exc}") from None
    out = {}
    for name, info in header.items():
        dtype = ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise MergeInputError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        out[name] = TensorInfo(name, path, dtype, tuple(info["shape"]), base + begin, end - begin)
    return out


def weight_files(path: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickled .bin files) of a model directory: the files transformers would load
    (``sakura_models.weights``), so a stray ``*.safetensors`` beside a pickle is neither merged nor taken for
    the model's weights."""
    from sakura_models.weights import weights_to_load

    weights = weights_to_load(path)
    files = [] if weights is None else [path / name for name in weights.files]
    return ([], files) if weights is not None and weights.pickled else (files, [])


def has_only_bin(path: Path) -> bool:
    files, bins = weight_files(path)
    return not files and bool(bins)


def pickled_tensors(name: str, files: list[Path]) -> dict[str, TensorInfo]:
    """The tensors of pickled weight files, so that a pickled model is planned and checked like the others.

    Each file must be one torch's weights_only unpickler accepts (tensors and plain containers, nothing that
    runs code): mergekit loads them that way and would refuse one mid-merge, as an internal error naming no
    model. Zip files (``torch.save``'s format since torch 1.6) are mapped, their tensors not read; an older
    file is read whole."""
    import pickle
    import zipfile

    import torch

    from sakura_models.loading import refusal_reason

    tensors: dict[str, TensorInfo] = {}
    for file in files:
        try:
            state = torch.load(file, weights_only=True, mmap=zipfile.is_zipfile(file), map_location="cpu")
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
            raise MergeInputError(
                f"model {name}: torch will not load {file.name} safely ({refusal_reason(exc)}); convert the weights "
                "to safetensors"
            ) from None
        for key, value in (state.items() if isinstance(state, dict) else ()):
            if isinstance(value, torch.Tensor):
                dtype = str(value.dtype).removeprefix("torch.")
                tensors[key] = TensorInfo(key, file, dtype, tuple(value.shape), -1, value.numel() * value.element_size())
    return tensors


def load_model(name: str, path: Path, allow_bin: bool) -> ModelInputs:
    if not path.is_dir():
        raise MergeInputError(f"model {name}: no such directory {path}")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise MergeInputError(f"model {name}: {path} has no config.json")
    config = json.loads(config_path.read_text())
    files, bins = weight_files(path)
    if not files:
        if bins and allow_bin:
            return ModelInputs(name, path, config, pickled_tensors(name, bins), bin_only=True)
        if bins:
            raise MergeInputError(
                f"model {name}: only pickled .bin weights in {path} (pickles can run code); "
                "convert them to safetensors or set allow_bin = true"
            )
        raise MergeInputError(f"model {name}: no *.safetensors weights in {path}")
    tensors: dict[str, TensorInfo] = {}
    for file in files:
        if not file.is_file():
            raise MergeInputError(f"model {name}: {file.name} is listed in the index but missing")
        tensors.update(read_header(file))
    return ModelInputs(name, path, config, tensors)


# -- checks and plan --------------------------------------------------------------------------------
def normalize_slices(config: MergeConfig, models: dict[str, ModelInputs]) -> list[SliceLayout]:
    group = config.single_group
    assert group is not None, "several modules run through mergekit's executor"
    if group.slices:
        out = []
        for i, s in enumerate(group.slices):
            sources = []
            for j, src in enumerate(s.sources):
                start, end = src.layer_range
                n = models[src.model].num_layers
                if not (0 <= start < end <= n):
                    raise MergeInputError(
                        f"{group.at(f'slices[{i}].sources[{j}].layer_range')}: [{start}, {end}] is out of bounds: "
                        f"model {src.model} has {n} layers"
                    )
                sources.append((src.model, start, end))
            lengths = {end - start for _, start, end in sources}
            if len(lengths) > 1:
                raise MergeInputError(f"{group.at(f'slices[{i}]')}: every source of a slice needs the same number of layers")
            out.append(SliceLayout(sources, s.base_model or config.base_model, s.parameters,
                                   [src.parameters for src in s.sources], group.parameters))
        return out
    sources, params = [], []
    for entry in group.models or []:
        sources.append((entry.model, 0, models[entry.model].num_layers))
        params.append(entry.parameters)
    base = config.base_model
    if base and base not in [m for m, _, _ in sources]:
        sources.append((base, 0, models[base].num_layers))
        params.append(None)
    return [SliceLayout(sources, base, None, params, group.parameters)]


def check_architectures(models: dict[str, ModelInputs], order: list[str]) -> None:
    first = models[order[0]]
    for name in order[1:]:
        other = models[name]
        for key in ("architectures", "model_type"):
            a, b = first.config.get(key), other.config.get(key)
            if a != b:
                raise MergeInputError(
                    f"models {first.name} and {other.name} differ in {key}: {a} vs {b} (allow_crimes merges them anyway)"
                )


VOCAB_WORDS = (*PRE_WORDS, "lm_head", "output.weight")


def plan_tensors(layout: Layout, vocab_may_differ: bool = False) -> list[OutTensor]:
    models = layout.models
    out: list[OutTensor] = []
    first_slice, last_slice = layout.slices[0], layout.slices[-1]

    def non_layer(model: str) -> list[str]:
        return [n for n in models[model].tensors if not LAYER_RE.match(n)]

    def tensor(model: str, name: str, out_name: str) -> TensorInfo:
        info = models[model].tensors.get(name)
        if info is None:
            raise MergeInputError(f"tensor {out_name}: {name} is missing in model {model}")
        return info

    def add(out_name: str, names: list[tuple[str, str]], slice_index: int, t: float) -> None:
        infos = [tensor(m, n, out_name) for m, n in names]
        for (m, n), info in zip(names[1:], infos[1:]):
            if info.shape != infos[0].shape and not (vocab_may_differ and any(w in out_name for w in VOCAB_WORDS)):
                raise MergeInputError(
                    f"tensor {out_name}: shape {list(infos[0].shape)} in model {names[0][0]} "
                    f"but {list(info.shape)} in model {m}"
                )
        out.append(OutTensor(out_name, names, slice_index, t, infos[0].shape, [i.dtype for i in infos]))

    def check_same_names(slice_: SliceLayout, names: list[str], where: str) -> None:
        for model, _, _ in slice_.sources[1:]:
            extra = sorted(set(non_layer(model)) - set(names))
            if extra:
                raise MergeInputError(f"tensor {extra[0]}: in model {model} but not in model {slice_.sources[0][0]} ({where})")

    first_names = non_layer(first_slice.sources[0][0])
    pre = [n for n in first_names if any(w in n for w in PRE_WORDS)]
    last_names = non_layer(last_slice.sources[0][0])
    post = [n for n in last_names if not any(w in n for w in PRE_WORDS)]
    check_same_names(first_slice, first_names, "embeddings")
    check_same_names(last_slice, last_names, "head")
    for name in pre:
        add(name, [(m, name) for m, _, _ in first_slice.sources], 0, 0.0)

    out_layer = 0
    for si, slice_ in enumerate(layout.slices):
        n = slice_.sources[0][2] - slice_.sources[0][1]
        for idx in range(n):
            t = idx / (n - 1) if n > 1 else 1.0
            per_model = []
            for model, start, _ in slice_.sources:
                suffixes = {}
                for name in models[model].tensors:
                    match = LAYER_RE.match(name)
                    if match and int(match.group(2)) == start + idx:
                        suffixes[match.group(3)] = name
                per_model.append((model, suffixes))
            ref_model, ref = per_model[0]
            if not ref:
                raise MergeInputError(f"model {ref_model} has no tensors for layer {slice_.sources[0][1] + idx}")
            for model, suffixes in per_model[1:]:
                missing = sorted(set(ref) ^ set(suffixes))
                if missing:
                    raise MergeInputError(
                        f"layer {slice_.sources[0][1] + idx}: tensor {missing[0]} is in one of models "
                        f"{ref_model}, {model} but not the other"
                    )
            prefix = LAYER_RE.match(next(iter(ref.values()))).group(1)
            for suffix in ref:
                out_name = f"{prefix}{out_layer}.{suffix}"
                add(out_name, [(model, suffixes[suffix]) for model, suffixes in per_model], si, t)
            out_layer += 1

    for name in post:
        add(name, [(m, name) for m, _, _ in last_slice.sources], len(layout.slices) - 1, 0.0)
    return out


def check_inputs(
    config: MergeConfig, paths: dict[str, str], vocab_may_differ: bool = False, origins: Optional[dict[str, str]] = None
) -> Layout:
    """Load every model's config and tensor index; plan the output tensors (``vocab_may_differ``: mergekit
    will build a union tokenizer, so embedding rows may differ between models). ``paths``: each model
    reference's weights; ``origins``: its own directory when that differs (a model with a LoRA applied)."""
    from sakura_merge.config import model_references

    refs = model_references(config)
    order = list(dict.fromkeys(name for key, name in refs.items() if key != "tokenizer_source"))
    models = {name: load_model(name, Path(paths[name]), config.allow_bin) for name in order}
    if config.tokenizer_source in refs.values() and config.tokenizer_source not in models:
        ts = config.tokenizer_source
        if not Path(paths[ts]).is_dir():
            raise MergeInputError(f"tokenizer_source {ts}: no such directory {paths[ts]}")
    if not config.allow_crimes:
        check_architectures(models, order)
    donor = config.base_model or order[0]
    own = {name: Path((origins or {}).get(name, path)) for name, path in paths.items()}
    if config.single_group is None:  # several modules: mergekit plans them
        return Layout(models, [], donor=donor, origins=own)
    layout = Layout(models, normalize_slices(config, models), donor=donor, origins=own)
    layout.tensors = plan_tensors(layout, vocab_may_differ)
    return layout


# -- tokenizers -------------------------------------------------------------------------------------
def _vocab(path: Path) -> Optional[tuple[Any, Any]]:
    file = path / "tokenizer.json"
    if not file.is_file():
        return None
    data = json.loads(file.read_text())
    added = sorted((t["id"], t["content"]) for t in data.get("added_tokens", []))
    return json.dumps(data.get("model", {}).get("vocab"), sort_keys=True), added


def needs_vocab_merge(config: MergeConfig, paths: dict[str, str]) -> bool:
    """True when the models' vocabularies differ (or cannot be compared): mergekit builds the tokenizer."""
    vocabs = [_vocab(Path(p)) for p in paths.values()]
    return any(v is None for v in vocabs) or any(v != vocabs[0] for v in vocabs[1:])

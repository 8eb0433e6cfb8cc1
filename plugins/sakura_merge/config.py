"""mergekit's merge configuration, key for key, as sakura options (pydantic, no heavy imports).

A recipe's merge stage and a mergekit YAML file use the same keys. In a recipe every ``model`` value is a
model alias or a stage name; in a YAML file given to ``sakura merge`` it is a model path.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import ConfigDict, Field, model_validator

from sakura_core.stage import Options

Scalar = Union[bool, int, float, str]
ScalarOrGradient = Union[Scalar, list[Scalar]]


class ConditionalParameter(Options):
    """``{ filter = "self_attn", value = [0, 0.5, 1] }``: applies to tensors whose name contains ``filter``."""

    value: ScalarOrGradient
    filter: Optional[str] = None


ParameterSetting = Union[ConditionalParameter, list[ConditionalParameter], ScalarOrGradient]
Parameters = dict[str, ParameterSetting]

DType = Literal["float32", "float16", "bfloat16", "float64", "fp32", "fp16", "bf16"]
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class ModelEntry(Options):
    model: str
    parameters: Optional[Parameters] = None


class SliceSource(Options):
    model: str
    layer_range: tuple[int, int]
    parameters: Optional[Parameters] = None


class Slice(Options):
    sources: list[SliceSource] = Field(min_length=1)
    base_model: Optional[str] = None
    residual_weight: Optional[float] = None
    parameters: Optional[Parameters] = None


class MergeConfig(Options):
    """The keys of a mergekit configuration, plus a few sakura execution options."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    merge_method: str
    base_model: Optional[str] = None
    models: Optional[list[ModelEntry]] = None
    slices: Optional[list[Slice]] = None
    parameters: Optional[Parameters] = None
    dtype: Optional[DType] = None
    out_dtype: Optional[DType] = None
    tokenizer_source: Optional[str] = None  # "base", "union", or a model
    tokenizer: Optional[dict[str, Any]] = None  # mergekit's tokenizer table (runs through mergekit)
    chat_template: Optional[str] = None

    # -- sakura's own execution options (not part of mergekit's configuration) --------------------
    engine: Literal["auto", "native", "mergekit"] = Field(
        "auto", description="native executor, mergekit's executor, or native when the method has a native implementation"
    )
    device: str = Field("auto", description='"auto" (cuda when available), "cpu", "cuda", "cuda:1", ...')
    shard_size: str = Field("5GB", description="largest output safetensors shard, e.g. 2GB or 500MB")
    allow_bin: bool = Field(False, description="read pickled .bin weights (unsafe: pickles can run code)")
    seed: Optional[int] = Field(None, description="seed for randomized methods (dare_*): same seed, same output")

    @model_validator(mode="after")
    def _one_layout(self) -> "MergeConfig":
        if bool(self.models) == bool(self.slices):
            raise ValueError("give exactly one of 'models' or 'slices'")
        if self.tokenizer_source and self.tokenizer:
            raise ValueError("give either 'tokenizer_source' or 'tokenizer', not both")
        return self

    @property
    def compute_dtype(self) -> Optional[str]:
        return DTYPE_ALIASES.get(self.dtype, self.dtype) if self.dtype else None

    @property
    def output_dtype(self) -> Optional[str]:
        return DTYPE_ALIASES.get(self.out_dtype, self.out_dtype) if self.out_dtype else None


def model_references(config: MergeConfig) -> dict[str, str]:
    """``{key path: model}`` for every model the configuration names, in the order a user wrote them."""
    refs: dict[str, str] = {}
    if config.base_model:
        refs["base_model"] = config.base_model
    for i, entry in enumerate(config.models or []):
        refs[f"models[{i}].model"] = entry.model
    for i, slice_ in enumerate(config.slices or []):
        if slice_.base_model:
            refs[f"slices[{i}].base_model"] = slice_.base_model
        for j, source in enumerate(slice_.sources):
            refs[f"slices[{i}].sources[{j}].model"] = source.model
    ts = config.tokenizer_source
    if ts and ts not in ("base", "union"):
        refs["tokenizer_source"] = ts
    return refs


def mergekit_dict(config: MergeConfig, paths: dict[str, str]) -> dict[str, Any]:
    """The configuration as mergekit reads it, with every model name replaced by its (absolute) path."""
    data = config.model_dump(
        mode="json", exclude_none=True, exclude={"engine", "device", "shard_size", "allow_bin", "seed"}
    )

    def swap(name: str) -> str:
        return paths.get(name, name)

    if "base_model" in data:
        data["base_model"] = swap(data["base_model"])
    for entry in data.get("models", []):
        entry["model"] = swap(entry["model"])
    for slice_ in data.get("slices", []):
        if "base_model" in slice_:
            slice_["base_model"] = swap(slice_["base_model"])
        for source in slice_["sources"]:
            source["model"] = swap(source["model"])
            source["layer_range"] = list(source["layer_range"])
    ts = data.get("tokenizer_source")
    if ts and ts not in ("base", "union"):
        data["tokenizer_source"] = swap(ts)
    for key in ("dtype", "out_dtype"):
        if key in data:
            data[key] = DTYPE_ALIASES.get(data[key], data[key])
    return data


def parse_size(text: str) -> int:
    """``5GB`` / ``500MB`` / ``1.5G`` / ``1000000`` -> bytes."""
    units = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30}
    s = str(text).strip().lower().replace(" ", "")
    number = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(number):]
    if unit not in units or not number:
        raise ValueError(f"cannot read a size from {text!r} (e.g. 5GB, 500MB)")
    return int(float(number) * units[unit])

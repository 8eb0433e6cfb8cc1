"""mergekit's merge configuration, key for key, as sakura options (pydantic, no heavy imports).

A recipe's merge stage and a mergekit YAML file use the same keys. In a recipe every ``model`` value is a
model alias or a stage name; in a YAML file given to ``sakura merge`` it is a model path.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import ConfigDict, Field, model_validator

from sakura_core.options import Options

Scalar = Union[bool, int, float, str]
ScalarOrGradient = Union[Scalar, list[Scalar]]


class ConditionalParameter(Options):
    """``{ filter = "self_attn", value = [0, 0.5, 1] }``: applies to tensors whose name contains ``filter``."""

    value: ScalarOrGradient
    """The parameter's value for the matching tensors: a number, boolean or string, or a list of numbers
    interpolated over the layers (a gradient)."""
    filter: Optional[str] = None
    """Substring of the tensor name this entry applies to (``self_attn``, ``mlp``, ...); unset or ``*``: every
    tensor. In a list the first matching entry wins."""


ParameterSetting = Union[ConditionalParameter, list[ConditionalParameter], ScalarOrGradient]
Parameters = dict[str, ParameterSetting]

DType = Literal["float32", "float16", "bfloat16", "float64", "fp32", "fp16", "bf16"]
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class ModelEntry(Options):
    model: str
    """Model alias or stage name."""
    parameters: Optional[Parameters] = None
    """This model's own values of per-model parameters (``weight``, ``density``, ...)."""


class SliceSource(Options):
    model: str
    """Model alias or stage name."""
    layer_range: tuple[int, int]
    """The model's layers ``[start, end]`` that this source contributes, counted from 0, ``end`` excluded."""
    parameters: Optional[Parameters] = None
    """This source's own values of per-model parameters, for this slice."""


class Slice(Options):
    sources: list[SliceSource] = Field(min_length=1)
    """The models and layer ranges merged into this slice's output layers; each gives as many layers."""
    base_model: Optional[str] = None
    """Base model of this slice (one of its sources); unset: the top-level ``base_model``."""
    residual_weight: Optional[float] = None
    """Accepted for compatibility with mergekit's format; neither mergekit nor sakura uses it."""
    parameters: Optional[Parameters] = None
    """Parameter values for this slice, before the top-level ``parameters``."""


class MergeConfig(Options):
    """The keys of a mergekit configuration, plus a few sakura execution options.

    In a recipe (``kind = "merge"``) every ``model`` value names a model alias or a stage. The merge runs on
    sakura's streaming executor, tensor by tensor, or through mergekit's executor for what only mergekit
    implements; the artifact is the merged model with its tokenizer and ``mergekit_config.yml``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    merge_method: str
    """Merge method (see Merge methods below)."""
    base_model: Optional[str] = None
    """Base model: the origin of the task vectors, ``slerp``'s ``t = 0`` end, and the model whose config and
    tokenizer the output takes (unset: the first model's)."""
    models: Optional[list[ModelEntry]] = None
    """Models merged whole, each with its own parameters; give either ``models`` or ``slices``."""
    slices: Optional[list[Slice]] = None
    """The output's layers, slice after slice, each merged from layer ranges of its sources (layer stacking,
    depth up-scaling); give either ``models`` or ``slices``."""
    parameters: Optional[Parameters] = None
    """Parameter values of the merge method for every model and slice; each value is a number (or boolean or
    string), a gradient list, or a list of ``{ filter, value }`` tables."""
    dtype: Optional[DType] = None
    """dtype the tensors are merged in (``fp32``, ``fp16`` and ``bf16`` are aliases); unset: the promoted dtype
    of the inputs."""
    out_dtype: Optional[DType] = None
    """dtype of the saved weights, written to the output config too; unset: ``dtype``."""
    tokenizer_source: Optional[str] = None
    """The output's tokenizer: ``base``, ``union`` (every input's vocabulary, built by mergekit when the
    vocabularies differ) or a model's; unset: the base model's (else the first model's) files."""
    tokenizer: Optional[dict[str, Any]] = None
    """mergekit's ``tokenizer`` table, passed to mergekit unchanged (the merge then runs through mergekit's
    executor); not with ``tokenizer_source``."""
    chat_template: Optional[str] = None
    """Chat template of the output tokenizer: ``auto`` (the most common one among the inputs), a mergekit
    template name (``chatml``, ...) or a Jinja template; unset: the tokenizer's own."""

    # -- sakura's own execution options (not part of mergekit's configuration) --------------------
    engine: Literal["auto", "native", "mergekit"] = Field(
        "auto",
        description="Which executor merges: native (sakura's; an error when it cannot run the merge), mergekit, "
        "or auto: native unless the method, pickled weights, a tokenizer table or a vocabulary merge need mergekit.",
    )
    device: str = Field(
        "auto",
        description="Device the merge computes on: auto (CUDA when available, else the CPU), cpu, cuda, cuda:N or mps.",
    )
    shard_size: str = Field(
        "5GB",
        description="Largest safetensors file written, e.g. 2GB or 500MB (KB, MB, GB are powers of 1000; KiB, MiB, "
        "GiB powers of 1024).",
    )
    allow_bin: bool = Field(
        False,
        description="Read a model that has only pickled .bin weights (through mergekit's executor); loading a "
        "pickle can run code.",
    )
    seed: Optional[int] = Field(
        None, description="Seed of the randomized methods (dare_ties, dare_linear): the same seed gives the same "
        "output; unset: a different draw each run."
    )

    @model_validator(mode="after")
    def _one_layout(self) -> "MergeConfig":
        if bool(self.models) == bool(self.slices):
            raise ValueError("give exactly one of 'models' or 'slices'")
        if self.tokenizer_source and self.tokenizer:
            raise ValueError("give either 'tokenizer_source' or 'tokenizer', not both")
        return self

    def model_count(self) -> int:
        """How many models one output tensor is merged from: the most of any slice, or the ``models`` with the
        base model (which mergekit adds when it is not listed)."""
        if self.slices:
            return max(len(s.sources) for s in self.slices)
        return len({m.model for m in self.models or []} | ({self.base_model} if self.base_model else set()))

    def parameter_values(self, name: str) -> list[Any]:
        """Every value written for parameter ``name`` anywhere in the configuration (global, per slice, per
        model), gradients and filtered values flattened: what a merge method's ``check`` can bound."""
        scopes = [self.parameters] + [m.parameters for m in self.models or []]
        for slice_ in self.slices or []:
            scopes += [slice_.parameters] + [s.parameters for s in slice_.sources]
        found: list[Any] = []

        def walk(value: Any) -> None:
            if isinstance(value, ConditionalParameter):
                walk(value.value)
            elif isinstance(value, list):
                for item in value:
                    walk(item)
            else:
                found.append(value)

        for scope in scopes:
            if scope and name in scope:
                walk(scope[name])
        return found

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

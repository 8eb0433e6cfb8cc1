"""mergekit's merge configuration, key for key, as sakura options (pydantic, no heavy imports).

A recipe's merge stage and a mergekit YAML file use the same keys. In a recipe every ``model`` value is a
model alias or a stage name; in a YAML file given to ``sakura merge`` it is a model path. Either may end in
``+LORA``, mergekit's syntax for a LoRA adapter applied to the model before merging.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from sakura_core.errors import did_you_mean, join_key
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


def _reference_text(value: Any) -> Any:
    """mergekit's model reference: ``MODEL`` or ``MODEL+LORA`` (at most one ``+``), or its table form
    ``{ model = ..., lora = ... }`` (each a string or ``{ path, revision }``), as the string."""
    if isinstance(value, dict):
        if value.get("override_architecture") is not None:
            raise ValueError("override_architecture is not supported by sakura (run mergekit-yaml for it)")
        unknown = set(value) - {"model", "lora", "override_architecture"}
        if unknown or "model" not in value:
            raise ValueError("expected a model reference: a string, or a table with 'model' and optionally 'lora'")
        parts = [_path_text(value["model"])] + ([_path_text(value["lora"])] if value.get("lora") else [])
        value = "+".join(parts)
    if isinstance(value, str) and value.count("+") > 1:
        raise ValueError("expected MODEL or MODEL+LORA, with one '+' at most")
    return value


def _path_text(value: Any) -> Any:
    if isinstance(value, dict) and "path" in value:
        return value["path"] + (f"@{value['revision']}" if value.get("revision") else "")
    return value


ModelRef = Annotated[str, BeforeValidator(_reference_text)]


def split_reference(reference: str) -> tuple[str, Optional[str]]:
    """``"base+path/to/lora"`` -> ``("base", "path/to/lora")``; ``"base"`` -> ``("base", None)``."""
    model, _, lora = reference.partition("+")
    return model, lora or None


class ModelEntry(Options):
    model: ModelRef
    """Model alias or stage name, optionally followed by ``+LORA``: a LoRA adapter directory (relative to the
    recipe) applied to the model before merging."""
    parameters: Optional[Parameters] = None
    """This model's own values of per-model parameters (``weight``, ``density``, ...)."""


class SliceSource(Options):
    model: ModelRef
    """Model alias or stage name, optionally followed by ``+LORA`` (a LoRA adapter applied before merging)."""
    layer_range: tuple[int, int]
    """The model's layers ``[start, end]`` that this source contributes, counted from 0, ``end`` excluded."""
    parameters: Optional[Parameters] = None
    """This source's own values of per-model parameters, for this slice."""


class Slice(Options):
    sources: list[SliceSource] = Field(min_length=1)
    """The models and layer ranges merged into this slice's output layers; each gives as many layers."""
    base_model: Optional[ModelRef] = None
    """Base model of this slice (one of its sources); unset: the top-level ``base_model``."""
    residual_weight: Optional[float] = None
    """Accepted for compatibility with mergekit's format; neither mergekit nor sakura uses it."""
    parameters: Optional[Parameters] = None
    """Parameter values for this slice, before the top-level ``parameters``."""


class Module(Options):
    """One module of mergekit's ``modules`` table: the models or slices merged into that part of the model."""

    models: Optional[list[ModelEntry]] = None
    """Models merged whole into this module; give either ``models`` or ``slices``."""
    slices: Optional[list[Slice]] = None
    """This module's layers, slice after slice; give either ``models`` or ``slices``."""
    parameters: Optional[Parameters] = None
    """Parameter values for this module, after its slices' and before the top-level ``parameters``."""

    @model_validator(mode="after")
    def _one_layout(self) -> "Module":
        if bool(self.models) == bool(self.slices):
            raise ValueError("give exactly one of 'models' or 'slices'")
        return self


@dataclass(frozen=True)
class MergeGroup:
    """The models or slices merged into one module: the whole model (``models`` / ``slices`` at the top level)
    or one entry of ``modules``."""

    key: str
    """Where it is written: ``""`` at the top level, ``modules.NAME`` in a module."""
    models: Optional[list[ModelEntry]]
    slices: Optional[list[Slice]]
    parameters: Optional[Parameters]
    """The module's own parameters (None at the top level)."""

    def at(self, key: str) -> str:
        return join_key(self.key, key)


class MergeConfig(Options):
    """The keys of a mergekit configuration, plus a few sakura execution options.

    In a recipe (``kind = "merge"``) every ``model`` value names a model alias or a stage. The merge runs on
    sakura's streaming executor, tensor by tensor, or through mergekit's executor for what only mergekit
    implements; the artifact is the merged model with its tokenizer and ``mergekit_config.yml``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    merge_method: str
    """Merge method (see Merge methods below)."""
    name: Optional[str] = None
    """Accepted for compatibility with mergekit-multi, which names each merge of a multi-merge file; unused."""
    base_model: Optional[ModelRef] = None
    """Base model: the origin of the task vectors, ``slerp``'s ``t = 0`` end, and the model whose config and
    tokenizer the output takes (unset: the first model's)."""
    models: Optional[list[ModelEntry]] = None
    """Models merged whole, each with its own parameters; give one of ``models``, ``slices`` or ``modules``."""
    slices: Optional[list[Slice]] = None
    """The output's layers, slice after slice, each merged from layer ranges of its sources (layer stacking,
    depth up-scaling); give one of ``models``, ``slices`` or ``modules``."""
    modules: Optional[dict[str, Module]] = None
    """mergekit's per-module layout, ``{ MODULE = { models or slices, parameters } }``, instead of ``models`` or
    ``slices``: a single-module architecture's one module is ``default`` (merged natively); architectures of
    several modules (vision-language models) run through mergekit's executor."""
    parameters: Optional[Parameters] = None
    """Parameter values of the merge method for every model and slice; each value is a number (or boolean or
    string), a gradient list, or a list of ``{ filter, value }`` tables."""
    dtype: Optional[DType] = None
    """dtype the tensors are merged in (``fp32``, ``fp16`` and ``bf16`` are aliases); unset: the promoted dtype
    of the inputs."""
    out_dtype: Optional[DType] = None
    """dtype of the saved weights, written to the output config too; unset: ``dtype``."""
    tokenizer_source: Optional[ModelRef] = None
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
        "pickle can run code, so each file must be one torch's weights_only loader accepts (checked before the "
        "merge).",
    )
    seed: Optional[int] = Field(
        None, description="Seed of the randomized methods (dare_ties, dare_linear, della, della_linear, and "
        "arcee_fusion on tensors over a million values): the same seed gives the same output, mergekit's "
        "`--random-seed` output by default (see random_stream); unset: a different draw each run."
    )
    random_stream: Literal["mergekit", "per_tensor"] = Field(
        "mergekit",
        description="How a seeded randomized method draws: mergekit (one stream for the whole merge, drawn in the "
        "order mergekit's executor computes the tensors, so the output is mergekit's for the same seed) or "
        "per_tensor (a stream per tensor seeded from the seed and the tensor's name: independent of the order, "
        "not mergekit's output).",
    )
    strict: bool = Field(
        False,
        description="Refuse what mergekit would silently ignore (a parameter the method does not take, a shared "
        "parameter set for one model, a per-model parameter set for the base model), instead of a warning.",
    )
    lora_merge_cache: Optional[str] = Field(
        None,
        description="Directory where the models with a LoRA applied (`MODEL+LORA`) are kept between runs, as "
        "mergekit's `--lora-merge-cache` (entries are named by the model and LoRA paths, as mergekit names them); "
        "unset: a temporary directory, removed after the merge.",
    )
    allow_crimes: bool = Field(
        False, description="Merge models of different architectures, as mergekit's `--allow-crimes`."
    )
    trust_remote_code: bool = Field(
        False,
        description="Run a model repository's own code where transformers loads a tokenizer or model (chat "
        "templates, LoRAs, mergekit's executor), as mergekit's `--trust-remote-code`; it can run anything.",
    )

    @model_validator(mode="after")
    def _one_layout(self) -> "MergeConfig":
        if sum(bool(layout) for layout in (self.models, self.slices, self.modules)) != 1:
            raise ValueError("give exactly one of 'models', 'slices' or 'modules'")
        if self.tokenizer_source and self.tokenizer:
            raise ValueError("give either 'tokenizer_source' or 'tokenizer', not both")
        return self

    def groups(self) -> list[MergeGroup]:
        """The top-level ``models`` / ``slices``, or one group per module of ``modules``."""
        if self.modules:
            return [MergeGroup(f"modules.{name}", m.models, m.slices, m.parameters) for name, m in self.modules.items()]
        return [MergeGroup("", self.models, self.slices, None)]

    @property
    def single_group(self) -> Optional[MergeGroup]:
        """The group the native executor merges: the top level or the one module (a single-module architecture's,
        ``default``); None with several modules (they run through mergekit's executor)."""
        groups = self.groups()
        return groups[0] if len(groups) == 1 else None

    def model_count(self) -> int:
        """How many models one output tensor is merged from: the most of any slice, or the ``models`` with the
        base model (which mergekit adds when it is not listed)."""
        return max(self._group_model_count(group) for group in self.groups())

    def _group_model_count(self, group: MergeGroup) -> int:
        if group.slices:
            return max(len(s.sources) for s in group.slices)
        return len({m.model for m in group.models or []} | ({self.base_model} if self.base_model else set()))

    def parameter_values(self, name: str) -> list[Any]:
        """Every value written for parameter ``name`` anywhere in the configuration (global, per module, per
        slice, per model), gradients and filtered values flattened: what a merge method's ``check`` can bound."""
        scopes = [self.parameters]
        for group in self.groups():
            scopes += [group.parameters] + [m.parameters for m in group.models or []]
            for slice_ in group.slices or []:
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
    """``{key path: model reference}`` for every model the configuration names, in the order a user wrote them;
    a reference is a model name, or ``NAME+LORA`` (see ``split_reference``)."""
    refs: dict[str, str] = {}
    if config.base_model:
        refs["base_model"] = config.base_model
    for group in config.groups():
        for i, entry in enumerate(group.models or []):
            refs[group.at(f"models[{i}].model")] = entry.model
        for i, slice_ in enumerate(group.slices or []):
            if slice_.base_model:
                refs[group.at(f"slices[{i}].base_model")] = slice_.base_model
            for j, source in enumerate(slice_.sources):
                refs[group.at(f"slices[{i}].sources[{j}].model")] = source.model
    ts = config.tokenizer_source
    if ts and ts not in ("base", "union"):
        refs["tokenizer_source"] = ts
    return refs


def lora_references(config: MergeConfig) -> dict[str, str]:
    """``{key path: LoRA}`` for every ``MODEL+LORA`` reference."""
    found = {}
    for key, reference in model_references(config).items():
        lora = split_reference(reference)[1]
        if lora is not None:
            found[key] = lora
    return found


# sakura's own execution options: not mergekit configuration keys (mergekit gets them as its MergeOptions)
SAKURA_OPTIONS = frozenset({"engine", "device", "shard_size", "allow_bin", "seed", "random_stream", "strict",
                            "lora_merge_cache", "allow_crimes", "trust_remote_code"})


def mergekit_dict(config: MergeConfig, paths: dict[str, str]) -> dict[str, Any]:
    """The configuration as mergekit reads it, with every model reference replaced by its path (``paths``:
    a whole ``MODEL+LORA`` reference, or the model alone, whose ``+LORA`` is then kept)."""
    data = config.model_dump(mode="json", exclude_none=True, exclude=set(SAKURA_OPTIONS))

    def swap(reference: str) -> str:
        if reference in paths:
            return paths[reference]
        model, lora = split_reference(reference)
        return paths.get(model, model) + (f"+{lora}" if lora else "")

    def swap_layout(layout: dict[str, Any]) -> None:
        for entry in layout.get("models", []):
            entry["model"] = swap(entry["model"])
        for slice_ in layout.get("slices", []):
            if "base_model" in slice_:
                slice_["base_model"] = swap(slice_["base_model"])
            for source in slice_["sources"]:
                source["model"] = swap(source["model"])
                source["layer_range"] = list(source["layer_range"])

    if "base_model" in data:
        data["base_model"] = swap(data["base_model"])
    swap_layout(data)
    for module in data.get("modules", {}).values():
        swap_layout(module)
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


# -- keys mergekit ignores ------------------------------------------------------------------------
@dataclass(frozen=True)
class UnknownKey:
    """A key of a mergekit YAML file that no configuration model has: mergekit ignores it."""

    key: str
    suggestion: str
    """`` (did you mean X?)`` when a real key is close, else empty."""


def without_unknown_keys(data: dict[str, Any]) -> tuple[dict[str, Any], list[UnknownKey]]:
    """A mergekit YAML mapping with the keys mergekit would ignore (its models accept any extra key) taken
    out, and those keys, at every level (the top, models, slices, sources, modules, ``{filter, value}``)."""
    found: list[UnknownKey] = []
    return _clean_model(MergeConfig, data, "", found), found


def _clean_model(model: type[BaseModel], data: dict[str, Any], key: str, found: list[UnknownKey]) -> dict[str, Any]:
    names = {info.alias or name: info.annotation for name, info in model.model_fields.items()}
    names.update({name: info.annotation for name, info in model.model_fields.items()})
    out = {}
    for name, value in data.items():
        if name not in names:
            found.append(UnknownKey(join_key(key, name), did_you_mean(str(name), names)))
            continue
        out[name] = _clean_value(names[name], value, join_key(key, name), found)
    return out


def _clean_value(annotation: Any, value: Any, key: str, found: list[UnknownKey]) -> Any:
    if isinstance(value, dict):
        model = _member(annotation, lambda t: isinstance(t, type) and issubclass(t, BaseModel))
        if model is not None:
            return _clean_model(model, value, key, found)
        mapping = _member(annotation, lambda t: get_origin(t) is dict)
        if mapping is not None:
            item = get_args(mapping)[1]
            return {k: _clean_value(item, v, join_key(key, k), found) for k, v in value.items()}
    elif isinstance(value, list):
        sequence = _member(annotation, lambda t: get_origin(t) is list)
        if sequence is not None:
            item = get_args(sequence)[0]
            return [_clean_value(item, v, f"{key}[{i}]", found) for i, v in enumerate(value)]
    return value


def _member(annotation: Any, wanted: Any) -> Any:
    """The first type in ``annotation`` (itself, or an alternative of a union or Optional) that is ``wanted``."""
    if wanted(annotation):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _member(arg, wanted)
            if found is not None:
                return found
    if get_origin(annotation) is Annotated:
        return _member(get_args(annotation)[0], wanted)
    return None

"""Parameters: mergekit's filters and gradients, checked before any work and resolved per tensor.

Resolution follows mergekit 0.1.5 exactly (``mergekit.config.evaluate_setting`` and
``mergekit.parameter_resolver``): scopes from the most to the least specific (the model's own parameters
in its slice or ``models`` entry, then the slice's, then its module's, then the global ``parameters``); in a scope a list of
``{filter, value}`` takes the first entry whose filter is a substring of the tensor name (no filter or
``*`` matches all); a list of numbers is a gradient interpolated over the relative layer depth ``t``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Optional

from pydantic import TypeAdapter, ValidationError

from sakura_core.errors import OptionError, did_you_mean, join_key
from sakura_merge.config import ConditionalParameter, MergeConfig, MergeGroup, Parameters
from sakura_merge.contract import MergeMethod


def evaluate_setting(setting: Any, tensor_name: str, t: float) -> Any:
    """One scope's setting -> the raw value for this tensor and depth, or None when no filter matches."""
    if isinstance(setting, ConditionalParameter):
        setting = [setting]
    if isinstance(setting, (bool, int, float, str)):
        return setting
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(e, (bool, int, float, str)) for e in setting):
            # mergekit validates each entry as the parameter's type first: every method parameter is a number
            # or a boolean, so YAML strings that read as numbers ("0.2", "1e-3") interpolate like numbers
            numbers = [_gradient_number(e) for e in setting]
            if any(n is None for n in numbers):
                return setting[int(t * (len(setting) - 1))]
            scaled = t * (len(setting) - 1)
            i0 = int(scaled)
            i1 = min(len(setting) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * numbers[i0] + frac * numbers[i1]
        for cond in setting:
            if cond.filter is None or cond.filter == "*" or (tensor_name and cond.filter in tensor_name):
                return evaluate_setting(cond.value, tensor_name, t)
        return None
    raise TypeError(f"unexpected parameter setting {setting!r}")


def _gradient_number(entry: Any) -> Optional[float]:
    """A gradient entry as a number (a string that reads as one included), or None (a boolean, a word)."""
    if isinstance(entry, bool):
        return None
    try:
        return float(entry)
    except ValueError:
        return None


def resolve(name: str, scopes: list[Optional[Parameters]], tensor_name: str, t: float) -> Any:
    """The first value a scope gives for parameter ``name`` (None: not set anywhere for this tensor)."""
    for scope in scopes:
        if scope and name in scope:
            value = evaluate_setting(scope[name], tensor_name, t)
            if value is not None:
                return value
    return None


@lru_cache(maxsize=None)
def _field_adapter(options: type, field: str) -> TypeAdapter:
    info = options.model_fields[field]
    return TypeAdapter(Annotated[info.annotation, info])


def field_name(method: MergeMethod, parameter: str) -> Optional[str]:
    """The options-model field a parameter name maps to (``lambda`` -> ``lambda_``)."""
    for fname, info in method.Options.model_fields.items():
        if parameter == fname or parameter == info.alias:
            return fname
    return None


def parameter_names(method: MergeMethod) -> list[str]:
    return [info.alias or fname for fname, info in method.Options.model_fields.items()]


# -- checks before any work --------------------------------------------------------------------------
@dataclass(frozen=True)
class Ignored:
    """A setting mergekit would ignore: accepted with a warning, refused under ``strict``."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@dataclass(frozen=True)
class _Scope:
    key: str
    parameters: Optional[Parameters]
    model: Optional[str] = None  # the model a per-model scope belongs to
    base: Optional[str] = None  # the base model of the scope's slice


def _scopes(config: MergeConfig) -> list[_Scope]:
    scopes = [_Scope("parameters", config.parameters)]
    for group in config.groups():
        if group.parameters is not None:
            scopes.append(_Scope(group.at("parameters"), group.parameters))
        for i, entry in enumerate(group.models or []):
            scopes.append(_Scope(group.at(f"models[{i}].parameters"), entry.parameters, entry.model, config.base_model))
        for i, slice_ in enumerate(group.slices or []):
            scopes.append(_Scope(group.at(f"slices[{i}].parameters"), slice_.parameters))
            base = slice_.base_model or config.base_model
            for j, source in enumerate(slice_.sources):
                scopes.append(_Scope(group.at(f"slices[{i}].sources[{j}].parameters"), source.parameters, source.model, base))
    return scopes


def check_parameters(
    config: MergeConfig, method: MergeMethod, method_name: str, known: Iterable[str] = ()
) -> list[Ignored]:
    """Check every parameter setting before any work; return the settings mergekit would ignore.

    Refused: values a parameter cannot take, missing required parameters, and a name that is no parameter of
    any merge method (``known``) but close to one of this method's (a misspelling: mergekit would silently use
    the default). Ignored, as mergekit ignores them (errors with ``strict``): a parameter of another method,
    any other unknown name, a shared parameter set for one model, a per-model parameter set for a base model
    that takes none."""
    names = parameter_names(method)
    every_name = set(known) | set(names)
    ignored: list[Ignored] = []
    for scope in _scopes(config):
        for pname, setting in (scope.parameters or {}).items():
            key = join_key(scope.key, pname)
            reason = _ignored_because(method, method_name, names, every_name, pname, scope)
            if reason is None:
                _check_values(method, field_name(method, pname), setting, key)
            elif config.strict:
                raise OptionError(key, f"{reason} (strict mode refuses what mergekit would ignore)")
            else:
                ignored.append(Ignored(key, f"ignored, as mergekit ignores it: {reason}"))
    _check_required(config, method, method_name)
    return ignored


def _ignored_because(
    method: MergeMethod, method_name: str, names: list[str], every_name: set[str], pname: str, scope: _Scope
) -> Optional[str]:
    """Why mergekit ignores this setting, or None when it uses it; raises for a misspelling."""
    fname = field_name(method, pname)
    if fname is None:
        hint = did_you_mean(pname, names)
        known = ", ".join(names) or "none"
        if hint and pname not in every_name:
            raise OptionError(join_key(scope.key, pname), f"unknown parameter for {method_name}{hint} (its parameters: {known})")
        return f"{method_name} has no parameter {pname}{hint} (its parameters: {known})"
    if scope.model is None:
        return None
    if pname not in method.per_model and fname not in method.per_model:
        return f"{pname} is shared by all models in {method_name}: set it under 'parameters'"
    if method.per_model_scope == "non_base" and scope.model == scope.base:
        return f"{method_name} takes no {pname} for its base model"
    return None


def _check_values(method: MergeMethod, fname: str, setting: Any, key: str) -> None:
    adapter = _field_adapter(method.Options, fname)

    def check_leaf(value: Any, leaf_key: str) -> None:
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            message = error["msg"][0].lower() + error["msg"][1:]
            raise OptionError(leaf_key, f"{message} (got {value!r})") from None

    def walk(value: Any, at: str) -> None:
        if isinstance(value, ConditionalParameter):
            walk(value.value, join_key(at, "value"))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{at}[{i}]")
            if _is_gradient(value) and not _takes_fractions(adapter, value):
                raise OptionError(at, f"{fname} takes one value, not a gradient: a gradient interpolates over the "
                                      f"layers and gives fractions (got {value!r})")
        else:
            check_leaf(value, at)

    walk(setting, key)


def _is_gradient(value: list[Any]) -> bool:
    """A list of numbers that are not all equal: interpolated over the layers (see ``evaluate_setting``)."""
    numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return len(numbers) == len(value) and len(set(numbers)) > 1


def _takes_fractions(adapter: TypeAdapter, gradient: list[float]) -> bool:
    """Whether the parameter accepts the values between a gradient's points (an int parameter does not)."""
    a, b = list(dict.fromkeys(gradient))[:2]
    try:
        adapter.validate_python(a + (b - a) * 0.37)  # a fraction between two valid points: any bounds hold
    except ValidationError:
        return False
    return True


def _check_required(config: MergeConfig, method: MergeMethod, method_name: str) -> None:
    for pname in method.required:
        for group in config.groups():
            if pname in method.per_model:
                _check_required_per_model(config, group, method, method_name, pname)
            else:
                _check_required_shared(config, group, method_name, pname)


def _has(parameters: Optional[Parameters], pname: str) -> bool:
    return bool(parameters) and pname in parameters


def _check_required_shared(config: MergeConfig, group: MergeGroup, method_name: str, pname: str) -> None:
    if _has(config.parameters, pname) or _has(group.parameters, pname):
        return
    for i, slice_ in enumerate(group.slices or [None]):
        if slice_ is not None and _has(slice_.parameters, pname):
            continue
        where = group.at(f"slices[{i}]") if slice_ is not None else group.at("parameters")
        raise OptionError(where, f"{method_name} needs parameter {pname!r} (e.g. parameters.{pname} = 0.5)")


def _check_required_per_model(
    config: MergeConfig, group: MergeGroup, method: MergeMethod, method_name: str, pname: str
) -> None:
    if _has(config.parameters, pname) or _has(group.parameters, pname):
        return
    for i, entry in enumerate(group.models or []):
        if method.per_model_scope == "non_base" and entry.model == config.base_model:
            continue
        if not _has(entry.parameters, pname):
            raise OptionError(group.at(f"models[{i}]"), f"{method_name} needs parameter {pname!r} for model {entry.model!r}")
    for i, slice_ in enumerate(group.slices or []):
        if _has(slice_.parameters, pname):
            continue
        base = slice_.base_model or config.base_model
        for j, source in enumerate(slice_.sources):
            if method.per_model_scope == "non_base" and source.model == base:
                continue
            if not _has(source.parameters, pname):
                raise OptionError(
                    group.at(f"slices[{i}].sources[{j}]"), f"{method_name} needs parameter {pname!r} for model {source.model!r}"
                )


# -- values that hold for every tensor ---------------------------------------------------------------
UNKNOWN = object()  # a value that depends on the tensor's name (a filter decides)


def _filter_free(setting: Any) -> bool:
    """Whether a setting gives every tensor the same value at a given depth (no filter decides)."""
    if isinstance(setting, ConditionalParameter):
        setting = [setting]
    if isinstance(setting, list) and setting and isinstance(setting[0], ConditionalParameter):
        first = setting[0]
        return (first.filter is None or first.filter == "*") and _filter_free(first.value)
    return True


def uniform_value(name: str, scopes: list[tuple[str, Optional[Parameters]]], t: float) -> tuple[Any, Optional[str]]:
    """``(value, key)``: the value parameter ``name`` takes at depth ``t`` for every tensor, and the key it is
    set at; ``(None, None)`` when no scope sets it (the default applies); ``(UNKNOWN, key)`` when it depends on
    the tensor's name. Checks at validate time rely only on such values: a filtered value may match no tensor."""
    for key, scope in scopes:
        if scope and name in scope:
            setting = scope[name]
            if not _filter_free(setting):
                return UNKNOWN, join_key(key, name)
            return evaluate_setting(setting, "", t), join_key(key, name)
    return None, None


@dataclass(frozen=True)
class NonBaseInput:
    """A non-base input of a slice (``models`` count as one slice), as mergekit resolves its parameters."""

    key: str
    """Where it is written (``models[1]``, ``slices[0].sources[2]``)."""
    model: str
    scopes: list[tuple[str, Optional[Parameters]]]
    """The parameter scopes that apply to it, most specific first: ``(key, parameters)``."""
    depths: tuple[float, ...]
    """The depths ``t`` its tensors certainly take, as mergekit's planner gives them: 0 at a slice's first layer
    and 1 at its last (a one-layer slice: 1 only), and 0 for the embeddings (first slice) and the final norm and
    head (last slice)."""


def non_base_inputs(config: MergeConfig) -> list[NonBaseInput]:
    """Every non-base input of every slice, with its parameter scopes and the depths it certainly takes."""
    found = []
    for group in config.groups():
        module = [(group.at("parameters"), group.parameters)] if group.parameters is not None else []
        tail = [*module, ("parameters", config.parameters)]
        for i, entry in enumerate(group.models or []):
            if entry.model != config.base_model:
                key = group.at(f"models[{i}]")
                found.append(NonBaseInput(key, entry.model, [(join_key(key, "parameters"), entry.parameters), *tail], (0.0, 1.0)))
        slices = group.slices or []
        for i, slice_ in enumerate(slices):
            base = slice_.base_model or config.base_model
            own = [(group.at(f"slices[{i}].sources[{j}].parameters"), s.parameters, s.model) for j, s in enumerate(slice_.sources)]
            start, end = slice_.sources[0].layer_range
            layers = {0.0, 1.0} if end - start > 1 else {1.0} if end - start == 1 else set()
            depths = tuple(sorted(layers | ({0.0} if i in (0, len(slices) - 1) else set())))
            for j, source in enumerate(slice_.sources):
                if source.model == base:
                    continue
                mine = [(key, params) for key, params, model in own if model == source.model]
                scopes = [*mine, (group.at(f"slices[{i}].parameters"), slice_.parameters), *tail]
                found.append(NonBaseInput(group.at(f"slices[{i}].sources[{j}]"), source.model, scopes, depths))
    return found


# -- per tensor --------------------------------------------------------------------------------------
def build_options(method: MergeMethod, values: dict[str, Any], where: str) -> Any:
    """Validate resolved values with the method's options model (raising a one-line error naming the tensor)."""
    from sakura_merge.errors import MergeInputError

    try:
        return method.Options.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise MergeInputError(f"{where}: parameter {loc}: {message}" if loc else f"{where}: {message}") from None

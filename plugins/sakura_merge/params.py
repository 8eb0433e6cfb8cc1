"""Parameters: mergekit's filters and gradients, checked before any work and resolved per tensor.

Resolution follows mergekit 0.1.5 exactly (``mergekit.config.evaluate_setting`` and
``mergekit.parameter_resolver``): scopes from the most to the least specific (the model's own parameters
in its slice or ``models`` entry, then the slice's, then the global ``parameters``); in a scope a list of
``{filter, value}`` takes the first entry whose filter is a substring of the tensor name (no filter or
``*`` matches all); a list of numbers is a gradient interpolated over the relative layer depth ``t``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Optional

from pydantic import TypeAdapter, ValidationError

from sakura_core.errors import OptionError, did_you_mean, join_key
from sakura_merge.config import ConditionalParameter, MergeConfig, Parameters
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
            if not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in setting):
                return setting[int(t * (len(setting) - 1))]
            scaled = t * (len(setting) - 1)
            i0 = int(scaled)
            i1 = min(len(setting) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * float(setting[i0]) + frac * float(setting[i1])
        for cond in setting:
            if cond.filter is None or cond.filter == "*" or (tensor_name and cond.filter in tensor_name):
                return evaluate_setting(cond.value, tensor_name, t)
        return None
    raise TypeError(f"unexpected parameter setting {setting!r}")


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
def check_parameters(config: MergeConfig, method: MergeMethod, method_name: str) -> None:
    """Unknown names, out-of-range values, shared parameters set per model, missing required parameters."""
    scopes: list[tuple[str, Optional[Parameters], bool]] = [("parameters", config.parameters, False)]
    for i, entry in enumerate(config.models or []):
        scopes.append((f"models[{i}].parameters", entry.parameters, True))
    for i, slice_ in enumerate(config.slices or []):
        scopes.append((f"slices[{i}].parameters", slice_.parameters, False))
        for j, source in enumerate(slice_.sources):
            scopes.append((f"slices[{i}].sources[{j}].parameters", source.parameters, True))
    names = parameter_names(method)
    for key, scope, per_model in scopes:
        for pname, setting in (scope or {}).items():
            fname = field_name(method, pname)
            if fname is None:
                known = ", ".join(names) or "none"
                raise OptionError(
                    join_key(key, pname),
                    f"unknown parameter for {method_name}{did_you_mean(pname, names)} (its parameters: {known})",
                )
            if per_model and pname not in method.per_model and fname not in method.per_model:
                raise OptionError(
                    join_key(key, pname),
                    f"{pname} is shared by all models in {method_name}: set it under 'parameters' (mergekit would ignore it here)",
                )
            _check_values(method, fname, setting, join_key(key, pname))
    _check_required(config, method, method_name)


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
        if pname in method.per_model:
            _check_required_per_model(config, method, method_name, pname)
            continue
        if config.parameters and pname in config.parameters:
            continue
        for i, slice_ in enumerate(config.slices or [None]):
            if slice_ is not None and slice_.parameters and pname in slice_.parameters:
                continue
            where = f"slices[{i}]" if slice_ is not None else "parameters"
            raise OptionError(where, f"{method_name} needs parameter {pname!r} (e.g. parameters.{pname} = 0.5)")


def _check_required_per_model(config: MergeConfig, method: MergeMethod, method_name: str, pname: str) -> None:
    if config.parameters and pname in config.parameters:
        return
    for i, entry in enumerate(config.models or []):
        if method.per_model_scope == "non_base" and entry.model == config.base_model:
            continue
        if not (entry.parameters and pname in entry.parameters):
            raise OptionError(f"models[{i}]", f"{method_name} needs parameter {pname!r} for model {entry.model!r}")
    for i, slice_ in enumerate(config.slices or []):
        if slice_.parameters and pname in slice_.parameters:
            continue
        base = slice_.base_model or config.base_model
        for j, source in enumerate(slice_.sources):
            if method.per_model_scope == "non_base" and source.model == base:
                continue
            if not (source.parameters and pname in source.parameters):
                raise OptionError(
                    f"slices[{i}].sources[{j}]", f"{method_name} needs parameter {pname!r} for model {source.model!r}"
                )


# -- per tensor --------------------------------------------------------------------------------------
def build_options(method: MergeMethod, values: dict[str, Any], where: str) -> Any:
    """Validate resolved values with the method's options model (raising a one-line error naming the tensor)."""
    from sakura_merge.errors import MergeInputError

    try:
        return method.Options.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"])
        raise MergeInputError(f"{where}: parameter {loc}: {error['msg']}") from None

"""The ``merge`` stage kind: mergekit's configuration keys in a recipe table, models by alias or stage name."""

from __future__ import annotations

import re
from typing import Any

from sakura_core.errors import OptionError, did_you_mean
from sakura_core.stage import CheckEnv, StageContext, StageKind
from sakura_merge.config import MergeConfig, model_references, parse_size

DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def check_config(config: MergeConfig, methods: Any) -> None:
    """Every check that needs no model files: method, parameters, slices, sizes. Raises ``OptionError``."""
    from sakura_merge.params import check_parameters

    name = config.merge_method
    if name not in methods:
        known = ", ".join(methods.names())
        raise OptionError("merge_method", f"unknown merge method {name!r}{did_you_mean(name, methods.names())} (known: {known})")
    method = methods.get(name)
    if config.engine == "native" and not method.native:
        raise OptionError("engine", f"{name} has no native implementation; use engine = \"auto\" or \"mergekit\"")
    try:
        parse_size(config.shard_size)
    except ValueError as exc:
        raise OptionError("shard_size", str(exc)) from None
    if not DEVICE_RE.match(config.device):
        raise OptionError("device", f"expected auto, cpu, cuda or cuda:N (got {config.device!r})")
    for i, slice_ in enumerate(config.slices or []):
        lengths = set()
        for j, source in enumerate(slice_.sources):
            start, end = source.layer_range
            if start < 0 or end <= start:
                raise OptionError(f"slices[{i}].sources[{j}].layer_range", f"expected [start, end] with 0 <= start < end (got [{start}, {end}])")
            lengths.add(end - start)
        if len(lengths) > 1:
            raise OptionError(f"slices[{i}]", "every source of a slice needs the same number of layers")
        count = len(slice_.sources)
        if method.max_models is not None and count > method.max_models:
            raise OptionError(f"slices[{i}].sources", f"{name} takes at most {method.max_models} models per slice, got {count}")
        if count < method.min_models:
            raise OptionError(f"slices[{i}].sources", f"{name} needs at least {method.min_models} models per slice, got {count}")
        base = slice_.base_model or config.base_model
        if method.base == "required" and base not in [s.model for s in slice_.sources]:
            raise OptionError(f"slices[{i}]", f"{name} needs base_model to be one of the slice's sources")
    if config.models:
        count = len({m.model for m in config.models} | ({config.base_model} if config.base_model else set()))
        if method.max_models is not None and count > method.max_models:
            raise OptionError("models", f"{name} takes at most {method.max_models} models, got {count}")
        if count < method.min_models:
            raise OptionError("models", f"{name} needs at least {method.min_models} models, got {count}")
    if method.base == "required" and not config.base_model and not all(s.base_model for s in config.slices or [None]):
        raise OptionError("base_model", f"{name} needs a base_model")
    check_parameters(config, method, name)


class MergeStage(StageKind):
    Options = MergeConfig
    produces = "model"

    def references(self, options: MergeConfig) -> dict[str, str]:
        return model_references(options)

    def check(self, options: MergeConfig, env: CheckEnv) -> None:
        check_config(options, env.plugins.merge_methods)

    def implementation_versions(self, options: MergeConfig, plugins: Any) -> dict[str, str]:
        entry = plugins.merge_methods.entry(options.merge_method)
        versions = {entry.plugin.name: entry.plugin.version}
        if not entry.implementation.native or options.engine == "mergekit":
            from importlib.metadata import version

            versions["mergekit"] = version("mergekit")
        return versions

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from sakura_merge.runner import execute_merge

        config: MergeConfig = ctx.options
        method = ctx.plugins.merge_methods.get(config.merge_method)
        paths = {name: str(ctx.input(name).path) for name in set(model_references(config).values())}
        return execute_merge(
            config, method, paths, ctx.output_dir,
            progress=lambda description, total: ctx.progress(description, total, unit="tensors"),
            log=ctx.log,
            record_names={name: name for name in paths},
        )

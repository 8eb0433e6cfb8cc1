"""The ``merge`` stage kind: mergekit's configuration keys in a recipe table, models by alias or stage name."""

from __future__ import annotations

import re
from typing import Any

from sakura_core.errors import OptionError, did_you_mean
from sakura_core.stage import CheckEnv, InputArtifact, StageContext, StageKind
from sakura_merge.config import MergeConfig, model_references, parse_size

DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def mergekit_reference(model: InputArtifact) -> str:
    """How the artifact's ``mergekit_config.yml`` names an input, so that mergekit and ``sakura merge`` run it
    as written: a Hub model as ``org/name@commit`` (mergekit's syntax); anything else by its name in the
    recipe (a local model or a stage's output has no name outside this store)."""
    manifest = model.manifest
    if model.kind == "model" and manifest.get("source") == "hub" and manifest.get("id") and manifest.get("sha"):
        return f"{manifest['id']}@{manifest['sha']}"
    return model.name


def check_config(config: MergeConfig, methods: Any, env: Any = None) -> None:
    """Every check that needs no model files: method, parameters, slices, sizes, and the method's own
    ``check``. Raises ``OptionError``."""
    from sakura_merge.params import check_parameters

    name = config.merge_method
    if name not in methods:
        known = ", ".join(methods.names())
        raise OptionError("merge_method", f"unknown merge method {name!r}{did_you_mean(name, methods.names())} (known: {known})")
    method = methods.get(name)
    if config.engine == "native" and not method.native:
        raise OptionError("engine", f"{name} has no native implementation; use engine = \"auto\" or \"mergekit\"")
    try:
        shard_bytes = parse_size(config.shard_size)
    except ValueError as exc:
        raise OptionError("shard_size", str(exc)) from None
    if shard_bytes <= 0:
        raise OptionError("shard_size", f"must be positive, e.g. 5GB (got {config.shard_size!r})")
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
    if method.base == "required" and not config.base_model and not (config.slices and all(s.base_model for s in config.slices)):
        raise OptionError("base_model", f"{name} needs a base_model")
    check_parameters(config, method, name)
    method.check(config, env)


class MergeStage(StageKind):
    Options = MergeConfig
    produces = "model"
    # mergekit's executor may run any merge (vocabulary merges, pickled inputs): the engine is chosen only
    # when the inputs are seen, so its version is recorded whichever ran.
    libraries = ("torch", "safetensors", "transformers", "mergekit")

    def references(self, options: MergeConfig) -> dict[str, str]:
        return model_references(options)

    def gpus(self, options: MergeConfig) -> int:
        return 0 if options.device == "cpu" else 1

    def check(self, options: MergeConfig, env: CheckEnv) -> None:
        check_config(options, env.plugins.merge_methods, env)

    def uses(self, options: MergeConfig) -> list[tuple[str, str]]:
        return [("merge_methods", options.merge_method)]


    def estimate(self, options: MergeConfig, inputs: dict[str, dict[str, Any]], env: CheckEnv) -> Any:
        """The output's config (the donor's, with the slices' layer count) and size; the native executor's
        working set: the largest tensor of every input at once, its float32 arithmetic and the write queue."""
        from sakura_core.estimate import Estimate, dtype_bytes, dtype_of, human
        from sakura_models.shapes import model_bytes, shape_of
        from sakura_merge.executor import PREFETCH_BYTES, WRITE_QUEUE_BYTES

        refs = model_references(options)
        order = list(dict.fromkeys(name for key, name in refs.items() if key != "tokenizer_source"))
        donor = options.base_model or order[0]
        config = inputs.get(donor, {}).get("config")
        if not isinstance(config, dict):
            return None
        out = dict(config)
        if options.slices:  # depth up-scaling: the output has the slices' layers, not the donor's
            out["num_hidden_layers"] = sum(s.sources[0].layer_range[1] - s.sources[0].layer_range[0] for s in options.slices)
        in_dtypes = {dtype_of(inputs.get(name, {}).get("config")) for name in order}
        compute = options.compute_dtype or (next(iter(in_dtypes)) if len(in_dtypes) == 1 else "float32")
        if compute is not None:
            out["torch_dtype" if "torch_dtype" in out and "dtype" not in out else "dtype"] = options.output_dtype or compute
        estimate = Estimate(output={"config": out}, device="cpu" if options.device == "cpu" else "gpu")
        size, shape = model_bytes(out), shape_of(out)
        if size is None or shape is None:
            return estimate
        estimate.disk["weights"] = size
        method = env.plugins.merge_methods.get(options.merge_method)
        if not method.native or options.engine == "mergekit" or options.tokenizer is not None:
            estimate.notes.append("runs through mergekit's executor: its memory is not estimated")
            return estimate
        largest = max(shape.vocab * shape.hidden, shape.hidden * shape.intermediate, shape.hidden * shape.q_out)
        if options.slices:
            n = max(len(s.sources) for s in options.slices)
        else:
            n = len({m.model for m in options.models or []} | ({options.base_model} if options.base_model else set()))
        c = dtype_bytes(compute)
        out_bytes = dtype_bytes(options.output_dtype or compute)
        read_ahead = PREFETCH_BYTES + n * largest * max(dtype_bytes(d) for d in in_dtypes | {compute})
        upcast = method.upcast_half and c == 2
        if estimate.device == "cpu":
            estimate.memory["read-ahead"] = read_ahead
        else:
            estimate.memory["inputs"] = n * largest * c
        # half inputs: one float32 copy of each and a float32 result; otherwise the result and a temporary
        estimate.memory["compute"] = largest * ((n + 1) * 4 if upcast else 2 * c) + largest * out_bytes
        estimate.memory["write queue"] = min(WRITE_QUEUE_BYTES, size)
        estimate.notes.append(
            f"streams tensor by tensor: the largest tensor ({largest / 1e6:.0f}M values) of {n} models at a time"
            + ("" if estimate.device == "cpu" else f"; host memory: {human(read_ahead)} read ahead")
        )
        return estimate

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from sakura_merge.runner import execute_merge

        config: MergeConfig = ctx.options
        method = ctx.plugins.merge_methods.get(config.merge_method)
        paths = {name: str(ctx.input(name).path) for name in set(model_references(config).values())}
        metrics = execute_merge(
            config, method, paths, ctx.output_dir,
            progress=lambda description, total: ctx.progress(description, total, unit="tensors"),
            log=ctx.log,
            record_names={name: mergekit_reference(ctx.input(name)) for name in paths},
        )
        # Whose semantics the method has: mergekit's (a port or the bridge), or its own plugin's (the card says)
        return {**metrics, "mergekit_method": method.mergekit_name}

"""The ``merge`` stage kind: mergekit's configuration keys in a recipe table, models by alias or stage name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sakura_core.errors import OptionError, did_you_mean
from sakura_core.stage import CheckEnv, InputArtifact, StageContext, StageKind
from sakura_merge.config import MergeConfig, MergeGroup, lora_references, model_references, parse_size, split_reference

if TYPE_CHECKING:  # pragma: no cover
    from sakura_merge.params import Ignored

DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def mergekit_reference(model: InputArtifact) -> str:
    """How the artifact's ``mergekit_config.yml`` names an input, so that mergekit and ``sakura merge`` run it
    as written: a Hub model as ``org/name@commit`` (mergekit's syntax); anything else by its name in the
    recipe (a local model or a stage's output has no name outside this store)."""
    manifest = model.manifest
    if model.kind == "model" and manifest.get("source") == "hub" and manifest.get("id") and manifest.get("sha"):
        return f"{manifest['id']}@{manifest['sha']}"
    return model.name


def check_config(config: MergeConfig, methods: Any, env: Any = None, base_dir: Optional[Path] = None) -> list[Ignored]:
    """Every check that needs no model files: method, parameters, slices, sizes, chat template, LoRA
    directories (relative to ``base_dir``, when given) and the method's own ``check``. Raises ``OptionError``;
    returns the settings mergekit would ignore (warnings; errors with ``strict``)."""
    from sakura_merge.params import check_parameters

    name = config.merge_method
    if name not in methods:
        known = ", ".join(methods.names())
        raise OptionError("merge_method", f"unknown merge method {name!r}{did_you_mean(name, methods.names())} (known: {known})")
    method = methods.get(name)
    _check_execution(config, method)
    for group in config.groups():
        _check_layout(config, group, method)
    if config.chat_template is not None:
        from sakura_merge.templates import chat_template_problem

        problem = chat_template_problem(config.chat_template)
        if problem:
            raise OptionError("chat_template", problem)
    if base_dir is not None:
        check_loras(config, base_dir)
    every_parameter = {p for n in methods.names() for p in methods.get(n).parameter_names()}
    ignored = check_parameters(config, method, name, every_parameter)
    method.check(config, env)
    return ignored


def _check_execution(config: MergeConfig, method: Any) -> None:
    name = config.merge_method
    if config.engine == "native" and not method.native:
        raise OptionError("engine", f"{name} has no native implementation; use engine = \"auto\" or \"mergekit\"")
    if config.random_stream == "per_tensor" and method.randomized and (not method.native or config.engine == "mergekit"):
        raise OptionError("random_stream", f"per_tensor streams are the native executor's; {name} runs through mergekit's")
    try:
        shard_bytes = parse_size(config.shard_size)
    except ValueError as exc:
        raise OptionError("shard_size", str(exc)) from None
    if shard_bytes <= 0:
        raise OptionError("shard_size", f"must be positive, e.g. 5GB (got {config.shard_size!r})")
    if not DEVICE_RE.match(config.device):
        raise OptionError("device", f"expected auto, cpu, cuda or cuda:N (got {config.device!r})")


def _check_layout(config: MergeConfig, group: MergeGroup, method: Any) -> None:
    """Layer ranges and model counts of one group (the top level or a module), as mergekit plans them."""
    name = config.merge_method
    for i, slice_ in enumerate(group.slices or []):
        lengths = set()
        for j, source in enumerate(slice_.sources):
            start, end = source.layer_range
            if start < 0 or end <= start:
                raise OptionError(group.at(f"slices[{i}].sources[{j}].layer_range"),
                                  f"expected [start, end] with 0 <= start < end (got [{start}, {end}])")
            lengths.add(end - start)
        if len(lengths) > 1:
            raise OptionError(group.at(f"slices[{i}]"), "every source of a slice needs the same number of layers")
        count = len(slice_.sources)
        if method.max_models is not None and count > method.max_models:
            raise OptionError(group.at(f"slices[{i}].sources"), f"{name} takes at most {method.max_models} models per slice, got {count}")
        if count < method.min_models:
            raise OptionError(group.at(f"slices[{i}].sources"), f"{name} needs at least {method.min_models} models per slice, got {count}")
        base = slice_.base_model or config.base_model
        if method.base == "required" and base not in [s.model for s in slice_.sources]:
            raise OptionError(group.at(f"slices[{i}]"), f"{name} needs base_model to be one of the slice's sources")
    if group.models:
        count = len({m.model for m in group.models} | ({config.base_model} if config.base_model else set()))
        if method.max_models is not None and count > method.max_models:
            raise OptionError(group.at("models"), f"{name} takes at most {method.max_models} models, got {count}")
        if count < method.min_models:
            raise OptionError(group.at("models"), f"{name} needs at least {method.min_models} models, got {count}")
    if method.base == "required" and not config.base_model and not (group.slices and all(s.base_model for s in group.slices)):
        raise OptionError("base_model", f"{name} needs a base_model")


def check_loras(config: MergeConfig, base_dir: Path) -> None:
    """Every ``MODEL+LORA`` names a LoRA adapter directory (``adapter_config.json``), relative to ``base_dir``."""
    for key, lora in lora_references(config).items():
        path = lora_path(lora, base_dir)
        if not (path / "adapter_config.json").is_file():
            what = "no such directory" if not path.is_dir() else "no adapter_config.json (not a PEFT LoRA adapter) in"
            raise OptionError(key, f"LoRA {lora!r}: {what} {path}")


def lora_path(lora: str, base_dir: Path) -> Path:
    path = Path(lora).expanduser()
    return path if path.is_absolute() else (base_dir / path).absolute()


class MergeStage(StageKind):
    Options = MergeConfig
    produces = "model"
    # mergekit's executor may run any merge (vocabulary merges, pickled inputs): the engine is chosen only
    # when the inputs are seen, so its version is recorded whichever ran.
    libraries = ("torch", "safetensors", "transformers", "mergekit")

    def references(self, options: MergeConfig) -> dict[str, str]:
        """The models and stages merged: ``base+./lora`` reads ``base`` (the LoRA directory is an external input)."""
        return {key: split_reference(reference)[0] for key, reference in model_references(options).items()}

    def gpus(self, options: MergeConfig) -> int:
        return 0 if options.device == "cpu" else 1

    def check(self, options: MergeConfig, env: CheckEnv) -> None:
        check_config(options, env.plugins.merge_methods, env, base_dir=env.recipe_dir)

    def external_inputs(self, options: MergeConfig, env: CheckEnv) -> dict[str, Any]:
        """Each LoRA applied before merging (``MODEL+LORA``), by content."""
        from sakura_core.hashing import hash_path

        loras = sorted(set(lora_references(options).values()))
        return {"loras": {lora: hash_path(lora_path(lora, env.recipe_dir)) for lora in loras}} if loras else {}

    def uses(self, options: MergeConfig) -> list[tuple[str, str]]:
        return [("merge_methods", options.merge_method)]

    def estimate(self, options: MergeConfig, inputs: dict[str, dict[str, Any]], env: CheckEnv) -> Any:
        """The output's config (the donor's, with the slices' layer count) and size; the native executor's
        working set: the largest tensor of every input at once, its float32 arithmetic and the write queue."""
        from sakura_core.estimate import Estimate, dtype_bytes, dtype_of, human
        from sakura_models.shapes import model_bytes, shape_of
        from sakura_merge.executor import PREFETCH_BYTES, WRITE_QUEUE_BYTES

        refs = self.references(options)
        order = list(dict.fromkeys(name for key, name in refs.items() if key != "tokenizer_source"))
        donor = split_reference(options.base_model)[0] if options.base_model else order[0]
        config = inputs.get(donor, {}).get("config")
        if not isinstance(config, dict):
            return None
        out = dict(config)
        group = options.single_group
        if group is not None and group.slices:  # depth up-scaling: the output has the slices' layers, not the donor's
            out["num_hidden_layers"] = sum(s.sources[0].layer_range[1] - s.sources[0].layer_range[0] for s in group.slices)
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
        if not method.native or options.engine == "mergekit" or options.tokenizer is not None or group is None:
            estimate.notes.append("runs through mergekit's executor: its memory is not estimated")
            return estimate
        largest = max(shape.vocab * shape.hidden, shape.hidden * shape.intermediate, shape.hidden * shape.q_out)
        n = options.model_count()
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
        for ignored in check_config(config, ctx.plugins.merge_methods, base_dir=ctx.recipe_dir):
            ctx.log(f"warning: {ignored}")
        names = set(self.references(config).values())
        paths = {name: str(ctx.input(name).path) for name in names}
        loras = {lora: str(lora_path(lora, ctx.recipe_dir)) for lora in lora_references(config).values()}
        metrics = execute_merge(
            config, method, paths, ctx.output_dir,
            loras=loras,
            progress=lambda description, total: ctx.progress(description, total, unit="tensors"),
            log=ctx.log,
            record_names={name: mergekit_reference(ctx.input(name)) for name in paths},
            scratch_dir=ctx.work_dir,
        )
        # Whose semantics the method has: mergekit's (a port or the bridge), or its own plugin's (the card says)
        return {**metrics, "mergekit_method": method.mergekit_name}

"""One entry point for a merge, shared by the recipe stage and ``sakura merge``: choose the engine, run it,
fix up the output config, write the record of the merge configuration."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

from sakura_core.torchimport import import_torch
from sakura_merge.config import MergeConfig, mergekit_dict, model_references, split_reference
from sakura_merge.errors import MergeInputError
from sakura_merge.contract import MergeMethod

RECORD_FILE = "mergekit_config.yml"


def resolve_device(device: str) -> str:
    torch = import_torch()  # the merge's first import of torch: the collector paused (see the module)

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MergeInputError(f"device {device!r} asked for, but CUDA is not available (use device = \"auto\" or \"cpu\")")
    return device


def choose_engine(config: MergeConfig, method: MergeMethod, paths: dict[str, str]) -> tuple[str, str]:
    """``(engine, why)``: "native" unless the configuration needs mergekit's executor."""
    if config.engine == "mergekit":
        return "mergekit", "asked for"
    reason = _mergekit_reason(config, method, paths)
    if reason is None:
        return "native", ""
    if config.engine == "native":
        raise MergeInputError(f"engine = \"native\" cannot run this merge ({reason}); use engine = \"auto\"")
    return "mergekit", reason


def _mergekit_reason(config: MergeConfig, method: MergeMethod, paths: dict[str, str]) -> Optional[str]:
    """What in the configuration or the models only mergekit's executor handles, or None."""
    from sakura_merge.inputs import has_only_bin, needs_vocab_merge

    if not method.native:
        return f"method {config.merge_method} has no native implementation"
    if config.tokenizer is not None:
        return "mergekit's 'tokenizer' table"
    if config.modules and _architecture_modules(config, paths) != [*config.modules]:
        return "an architecture of several modules"
    if any(has_only_bin(Path(p)) for p in paths.values()):
        return "pickled .bin weights"
    if config.tokenizer_source and needs_vocab_merge(config, paths):
        return "tokenizer_source over different vocabularies"
    return None


def _architecture_modules(config: MergeConfig, paths: dict[str, str]) -> list[str]:
    """The modules mergekit knows the models' architecture by (``default`` for a single-module one); a
    ``modules`` entry it does not know is refused here rather than by mergekit mid-plan."""
    from sakura_merge.bridge import architecture_modules

    first = paths[next(iter(model_references(config).values()))]
    known = architecture_modules(first, config.trust_remote_code)
    for name in config.modules or {}:
        if name not in known:
            raise MergeInputError(f"modules.{name}: the models' architecture has modules {', '.join(known)}")
    return known


def execute_merge(
    config: MergeConfig,
    method: MergeMethod,
    paths: dict[str, str],
    out_dir: Path,
    *,
    loras: Optional[dict[str, str]] = None,
    lora_cache: Optional[Path] = None,
    scratch_dir: Optional[Path] = None,
    progress: Optional[Callable[[str, int], Any]] = None,
    log: Callable[[str], None] = lambda message: None,
    record_names: Optional[dict[str, str]] = None,
) -> dict[str, Any]:
    """Merge into ``out_dir`` (existing, empty). ``paths``: model name -> local directory; ``loras``: the LoRA
    of each ``MODEL+LORA`` reference (the text after ``+``) -> its directory; ``lora_cache``: where models with
    their LoRA applied are kept (else a temporary directory in ``scratch_dir``); ``record_names``: how the
    written ``mergekit_config.yml`` names each model (a Hub model as ``org/name@commit``; default: as the
    configuration names it)."""
    from sakura_merge.lora import weight_directories

    started = time.monotonic()
    out_dir = Path(out_dir)
    with weight_directories(config, paths, loras or {}, lora_cache, scratch_dir, log) as weights:
        origins = {reference: paths[split_reference(reference)[0]] for reference in weights}
        engine, why = choose_engine(config, method, weights)
        metrics = _run_engine(config, method, weights, origins, out_dir, engine, why, progress, log)
    write_record(config, out_dir, engine, record_names or {})
    metrics.update(engine=engine, seconds=round(time.monotonic() - started, 3))
    return metrics


def _run_engine(
    config: MergeConfig,
    method: MergeMethod,
    weights: dict[str, str],
    origins: dict[str, str],
    out_dir: Path,
    engine: str,
    why: str,
    progress: Optional[Callable[[str, int], Any]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    from sakura_merge.executor import bind_parameters, check_method_inputs
    from sakura_merge.inputs import check_inputs

    vocab_merge = engine == "mergekit" and (config.tokenizer is not None or bool(config.tokenizer_source))
    # every user mistake about the models and every parameter value of every tensor, before any work
    inputs = check_inputs(config, weights, vocab_merge, origins)
    check_method_inputs(method, config.merge_method, inputs)
    plans = bind_parameters(config, method, inputs)
    if engine == "native" and method.randomized and config.seed is not None and config.random_stream == "mergekit":
        from sakura_merge.bridge import mergekit_task_order
        from sakura_merge.executor import mergekit_order

        plans = mergekit_order(plans, lambda: mergekit_task_order(config, weights))
    device = resolve_device(config.device)
    if engine == "native":
        from sakura_merge.executor import run_native

        metrics = run_native(config, method, inputs, plans, out_dir, device=device, progress=progress)
    else:
        from sakura_merge.bridge import run_mergekit

        log(f"running through mergekit's executor ({why})")
        metrics = run_mergekit(config, weights, out_dir, device)
    fix_output_config(config, inputs, out_dir)
    donor_generation = inputs.origins[inputs.donor] / "generation_config.json"
    if not (out_dir / "generation_config.json").exists() and donor_generation.is_file():
        import shutil

        shutil.copy(donor_generation, out_dir / "generation_config.json")  # mergekit skips it when it builds a tokenizer
    return {**metrics, "device": device}


def fix_output_config(config: MergeConfig, inputs: Any, out_dir: Path) -> None:
    """Depth up-scaling: make ``layer_types`` (and similar per-layer lists) match the new layer count."""
    if config.single_group is None:  # several modules: mergekit counts their layers
        return
    path = out_dir / "config.json"
    data = json.loads(path.read_text())
    layers = inputs.output_layer_sources()  # [(model name, source layer index)] per output layer
    changed = False
    for key in ("layer_types",):
        per_layer = data.get(key)
        if isinstance(per_layer, list) and len(per_layer) != len(layers):
            new = []
            for model, index in layers:
                source = inputs.models[model].config.get(key) or per_layer
                new.append(source[index] if index < len(source) else source[-1])
            data[key] = new
            changed = True
    if data.get("num_hidden_layers") != len(layers) and "num_hidden_layers" in data:
        data["num_hidden_layers"] = len(layers)
        changed = True
    if changed:
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_record(config: MergeConfig, out_dir: Path, engine: str, names: dict[str, str]) -> None:
    """The merge configuration as mergekit YAML (models by ``names``, else as the configuration names them),
    beside the weights."""
    import yaml

    data = mergekit_dict(config, names)
    text = f"# merged by sakura ({engine} engine)\n" + yaml.safe_dump(data, sort_keys=False)
    (out_dir / RECORD_FILE).write_text(text)

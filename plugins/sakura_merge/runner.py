"""One entry point for a merge, shared by the recipe stage and ``sakura merge``: choose the engine, run it,
fix up the output config, write the record of the merge configuration."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

from sakura_merge.config import MergeConfig, mergekit_dict
from sakura_merge.errors import MergeInputError
from sakura_merge.contract import MergeMethod

RECORD_FILE = "mergekit_config.yml"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MergeInputError(f"device {device!r} asked for, but CUDA is not available (use device = \"auto\" or \"cpu\")")
    return device


def choose_engine(config: MergeConfig, method: MergeMethod, paths: dict[str, str]) -> tuple[str, str]:
    """``(engine, why)``: "native" unless the configuration needs mergekit's executor."""
    if config.engine == "mergekit":
        return "mergekit", "asked for"
    reason = None
    if not method.native:
        reason = f"method {config.merge_method} has no native implementation"
    elif config.tokenizer is not None:
        reason = "mergekit's 'tokenizer' table"
    else:
        from sakura_merge.inputs import needs_vocab_merge, has_only_bin

        if any(has_only_bin(Path(p)) for p in paths.values()):
            reason = "pickled .bin weights"
        elif config.tokenizer_source and needs_vocab_merge(config, paths):
            reason = "tokenizer_source over different vocabularies"
    if reason is None:
        return "native", ""
    if config.engine == "native":
        raise MergeInputError(f"engine = \"native\" cannot run this merge ({reason}); use engine = \"auto\"")
    return "mergekit", reason


def execute_merge(
    config: MergeConfig,
    method: MergeMethod,
    paths: dict[str, str],
    out_dir: Path,
    *,
    progress: Optional[Callable[[str, int], Any]] = None,
    log: Callable[[str], None] = lambda message: None,
    record_names: Optional[dict[str, str]] = None,
) -> dict[str, Any]:
    """Merge into ``out_dir`` (existing, empty). ``paths``: model name -> local directory."""
    from sakura_merge.inputs import check_inputs

    started = time.monotonic()
    out_dir = Path(out_dir)
    engine, why = choose_engine(config, method, paths)
    vocab_merge = engine == "mergekit" and (config.tokenizer is not None or bool(config.tokenizer_source))
    inputs = check_inputs(config, paths, vocab_merge)  # every user mistake about the models, before any work
    from sakura_merge.executor import check_method_inputs

    check_method_inputs(method, config.merge_method, inputs)
    device = resolve_device(config.device)
    if engine == "native":
        from sakura_merge.executor import run_native

        metrics = run_native(config, method, inputs, out_dir, device=device, progress=progress)
    else:
        from sakura_merge.bridge import run_mergekit

        log(f"running through mergekit's executor ({why})")
        metrics = run_mergekit(config, paths, out_dir, device)
    fix_output_config(config, inputs, out_dir)
    donor_generation = inputs.models[inputs.donor].path / "generation_config.json"
    if not (out_dir / "generation_config.json").exists() and donor_generation.is_file():
        import shutil

        shutil.copy(donor_generation, out_dir / "generation_config.json")  # mergekit skips it when it builds a tokenizer
    write_record(config, out_dir, record_names or {}, engine)
    metrics.update(engine=engine, device=device, seconds=round(time.monotonic() - started, 3))
    return metrics


def fix_output_config(config: MergeConfig, inputs: Any, out_dir: Path) -> None:
    """Depth up-scaling: make ``layer_types`` (and similar per-layer lists) match the new layer count."""
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


def write_record(config: MergeConfig, out_dir: Path, names: dict[str, str], engine: str) -> None:
    """The merge configuration as mergekit YAML (models by their recipe names), beside the weights."""
    import yaml

    data = mergekit_dict(config, names)
    text = f"# merged by sakura ({engine} engine)\n" + yaml.safe_dump(data, sort_keys=False)
    (out_dir / RECORD_FILE).write_text(text)

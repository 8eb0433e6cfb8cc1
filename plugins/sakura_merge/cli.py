"""``sakura merge CONFIG.yml OUT_DIR``: a mergekit YAML file, unchanged, merged by sakura's executor."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import click

from sakura_core.errors import OptionError, RecipeError


def load_yaml_config(path: Path, overrides: dict[str, Any] | None = None) -> tuple[Any, Any, list[str]]:
    """Read and check a mergekit YAML file (``overrides``: sakura options given on the command line); model
    values are paths (relative to the current directory). Returns the configuration, the plugins and the
    warnings: what mergekit would ignore (keys no configuration has, parameters the method does not use)."""
    import yaml

    from sakura_core.options import validate_options
    from sakura_core.plugins import Plugins
    from sakura_merge.config import MergeConfig, without_unknown_keys
    from sakura_merge.stage import check_config

    file = path.name
    if not path.is_file():
        raise RecipeError("config file not found", file=str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"invalid YAML: {' '.join(str(exc).split())}", file=file) from None
    if not isinstance(data, dict):
        raise RecipeError("expected a mapping of mergekit configuration keys", file=file)
    data, unknown = without_unknown_keys({**data, **(overrides or {})})
    plugins = Plugins()
    try:
        warnings = [_unknown_key_warning(key, data.get("strict") is True) for key in unknown]
        config = validate_options(MergeConfig, data)
        warnings += [str(ignored) for ignored in check_config(config, plugins.merge_methods, base_dir=Path.cwd())]
    except OptionError as exc:
        key = exc.key
        if key and key.split(".")[0].split("[")[0] in (overrides or {}):
            key = f"--{key.replace('_', '-')}"
        raise RecipeError(exc.detail, file=file, key=key) from None
    return config, plugins, [f"{file}: {warning}" for warning in warnings]


def _unknown_key_warning(unknown: Any, strict: bool) -> str:
    """A key mergekit ignores: an error when it is close to a real key (a misspelling mergekit would silently
    skip) or under ``strict``, else a warning."""
    if unknown.suggestion:
        raise OptionError(unknown.key, f"unknown key{unknown.suggestion}")
    if strict:
        raise OptionError(unknown.key, "unknown key (strict mode refuses what mergekit would ignore)")
    return f"{unknown.key}: ignored, as mergekit ignores it: no such key"


def local_directory(reference: str) -> str:
    """A model or LoRA path as mergekit reads it (``path@revision``: the revision only matters on the Hub),
    absolute."""
    path = reference.split("@")[0] if reference.count("@") == 1 else reference
    return str(Path(path).expanduser().absolute())


def model_path(name: str) -> str:
    """The local directory of a model a YAML file names, as mergekit reads the name: an existing path as it
    is; else a Hub id (``org/name`` or ``org/name@revision``), downloaded (safetensors only) into the Hugging
    Face cache."""
    path = Path(name).expanduser()
    if path.exists() or "/" not in name or name.startswith((".", "/", "~")):
        return str(path.absolute())
    from sakura_core.options import validate_options
    from sakura_core.progress import Reporter
    from sakura_core.stage import SourceEnv
    from sakura_hub.source import HubSource

    source = HubSource()
    try:
        options = validate_options(source.Options, source.parse(name))
    except OptionError:
        return str(path.absolute())  # not a Hub id either: the merge says no such model directory
    env = SourceEnv(recipe_dir=Path.cwd(), store=None, reporter=Reporter())  # type: ignore[arg-type]
    return str(source.materialize(options, env, ""))


def add_merge_command(cli: click.Group) -> None:
    if "merge" in cli.commands:
        return

    @cli.command("merge")
    @click.argument("config_file", metavar="CONFIG.yml", type=click.Path(dir_okay=False))
    @click.argument("out_dir", metavar="OUT_DIR", type=click.Path(file_okay=False))
    @click.option("--device", default=None, help='auto (default: cuda when available), cpu, cuda, cuda:N.')
    @click.option("--engine", type=click.Choice(["auto", "native", "mergekit"]), default=None,
                  help="native executor, mergekit's, or native whenever possible (default).")
    @click.option("--shard-size", default=None, help="Largest output shard, e.g. 5GB (default) or 500MB.")
    @click.option("--seed", type=int, default=None,
                  help="Seed for randomized methods (dare_ties, dare_linear, della, della_linear, arcee_fusion): "
                       "the output is mergekit-yaml --random-seed's for the same seed.")
    @click.option("--random-stream", type=click.Choice(["mergekit", "per_tensor"]), default=None,
                  help="mergekit (default): one stream drawn in mergekit's order; per_tensor: a stream per tensor "
                       "(order-independent, not mergekit's output).")
    @click.option("--strict", is_flag=True, help="Refuse what mergekit would ignore (unknown keys, unused parameters).")
    @click.option("--lora-merge-cache", type=click.Path(file_okay=False), default=None,
                  help="Directory keeping the models with a LoRA applied (MODEL+LORA), as mergekit's.")
    @click.option("--allow-crimes", is_flag=True, help="Merge models of different architectures, as mergekit's.")
    @click.option("--trust-remote-code", is_flag=True,
                  help="Run model repositories' own code when loading tokenizers and models (danger), as mergekit's.")
    @click.option("--allow-bin", is_flag=True, help="Read pickled .bin weights (pickles can run code).")
    @click.option("--json", "as_json", is_flag=True, help="Print the merge's metrics as JSON.")
    def merge(config_file, out_dir, as_json, **options):
        """Merge the models of a mergekit CONFIG.yml into OUT_DIR (mergekit's keys and semantics)."""
        from sakura_merge.config import lora_references, model_references, split_reference
        from sakura_merge.runner import execute_merge

        overrides = {key: value for key, value in options.items() if value is not None and value is not False}
        config, plugins, warnings = load_yaml_config(Path(config_file), overrides)
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
        out = Path(out_dir).absolute()
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RecipeError(f"output directory {out} exists and is not empty")
        method = plugins.merge_methods.get(config.merge_method)
        names = {split_reference(reference)[0] for reference in model_references(config).values()}
        paths = {name: model_path(name) for name in names}  # a Hub id is downloaded, as mergekit does
        loras = {lora: local_directory(lora) for lora in lora_references(config).values()}
        cache = Path(config.lora_merge_cache).expanduser().absolute() if config.lora_merge_cache else None
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.sakura-partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            metrics = execute_merge(
                config, method, paths, tmp, loras=loras, lora_cache=cache,
                log=lambda message: click.echo(message, err=True),
            )
            if out.exists():
                out.rmdir()
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if as_json:
            click.echo(json.dumps({"out_dir": str(out), **metrics}, indent=2))
        else:
            click.echo(f"merged into {out} ({metrics['engine']} engine, {metrics['device']}, {metrics['seconds']:.1f} s)")

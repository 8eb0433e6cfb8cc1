"""``sakura merge CONFIG.yml OUT_DIR``: a mergekit YAML file, unchanged, merged by sakura's executor."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click

from sakura_core.errors import OptionError, RecipeError


def load_yaml_config(path: Path):
    """Read and check a mergekit YAML file; model values are paths (relative to the current directory)."""
    import yaml

    from sakura_core.plugins import Plugins
    from sakura_core.options import validate_options
    from sakura_merge.config import MergeConfig
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
    plugins = Plugins()
    try:
        config = validate_options(MergeConfig, data)
        check_config(config, plugins.merge_methods)
    except OptionError as exc:
        raise RecipeError(exc.detail, file=file, key=exc.key) from None
    return config, plugins


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
    @click.option("--seed", type=int, default=None, help="Seed for randomized methods (dare_*).")
    @click.option("--allow-bin", is_flag=True, help="Read pickled .bin weights (pickles can run code).")
    @click.option("--json", "as_json", is_flag=True, help="Print the merge's metrics as JSON.")
    def merge(config_file, out_dir, device, engine, shard_size, seed, allow_bin, as_json):
        """Merge the models of a mergekit CONFIG.yml into OUT_DIR (mergekit's keys and semantics)."""
        from sakura_merge.config import model_references
        from sakura_merge.runner import execute_merge

        config, plugins = load_yaml_config(Path(config_file))
        overrides = {k: v for k, v in {"device": device, "engine": engine, "shard_size": shard_size, "seed": seed}.items() if v is not None}
        if allow_bin:
            overrides["allow_bin"] = True
        if overrides:
            config = config.model_copy(update=overrides)
            from sakura_merge.stage import check_config

            try:
                check_config(config, plugins.merge_methods)
            except OptionError as exc:
                raise RecipeError(exc.detail, key=f"--{exc.key.replace('_', '-')}" if exc.key else None) from None
        out = Path(out_dir).absolute()
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RecipeError(f"output directory {out} exists and is not empty")
        method = plugins.merge_methods.get(config.merge_method)
        paths = {name: model_path(name) for name in set(model_references(config).values())}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.sakura-partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            metrics = execute_merge(
                config, method, paths, tmp,
                log=lambda message: click.echo(message, err=True),
                record_names={name: name for name in paths},
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

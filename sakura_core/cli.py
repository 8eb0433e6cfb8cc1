"""The ``sakura`` command line. One error boundary: a ``SakuraError`` is one line and a non-zero exit.

Kept fast: nothing here imports torch or transformers; ``run`` pulls them in only through the stages.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from sakura_core.errors import SakuraError


def _fail(error: SakuraError) -> None:
    click.secho(str(error), fg="red", err=True)
    sys.exit(error.exit_code)


_PLUGINS = None


def _plugins():
    """The process's one plugin manager (built-ins and entry points), created on first use."""
    global _PLUGINS
    if _PLUGINS is None:
        from sakura_core.plugins import Plugins

        _PLUGINS = Plugins()
    return _PLUGINS


def _load(recipe_path: str, overrides: tuple[str, ...] = (), store: str | None = None):
    from sakura_core.recipe import load_recipe

    return load_recipe(recipe_path, list(overrides), plugins=_plugins(), store=store)


def _reporter(stages: list[tuple[str, str]], quiet: bool):
    from sakura_core.progress import PlainReporter, Reporter, RichReporter

    if quiet:
        return Reporter()
    if sys.stderr.isatty():
        return RichReporter(stages)
    return PlainReporter()


recipe_argument = click.argument("recipe", type=click.Path(dir_okay=False))
set_option = click.option(
    "-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a recipe key, e.g. -s stages.dpo.args.learning_rate=1e-6 (value parsed as TOML).",
)
store_option = click.option("--store", type=click.Path(file_okay=False), help="Artifact store (default: .sakura/ beside the recipe).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sakura-recipes", prog_name="sakura")
def cli() -> None:
    """sakura: merge, prepare data, fine-tune and publish LLMs from one declarative TOML recipe."""


@cli.command()
@recipe_argument
@click.option("--only", multiple=True, metavar="STAGE", help="Run only this stage (its inputs must be built).")
@click.option("--from", "from_", multiple=True, metavar="STAGE", help="Re-run this stage and everything after it.")
@click.option("--force", multiple=True, metavar="STAGE", help="Re-run this stage even if its artifact is cached.")
@set_option
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with every stage's outcome on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def run(recipe: str, only, from_, force, overrides, store, as_json: bool, quiet: bool) -> None:
    """Run RECIPE stage by stage; cached stages are not run again."""
    from sakura_core.engine import Engine

    _quiet_libraries()

    loaded = _load(recipe, overrides, store)
    with _reporter([(s.name, s.kind_name) for s in loaded.stages.values()], quiet or False) as reporter:
        engine = Engine(loaded, reporter)
        result = engine.run(only=list(only), from_=list(from_), force=list(force))
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    elif not quiet:
        _print_summary(result)
    if result.error is not None:
        _fail(result.error)


def _quiet_libraries() -> None:
    """Stages report progress through sakura's own view: silence the libraries' tqdm bars and chatter."""
    import os
    import warnings

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _print_summary(result: Any) -> None:
    import os

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.recipe.name}", title_justify="left")
    for column in ("stage", "kind", "status", "seconds", "artifact"):
        table.add_column(column)
    for o in result.outcomes:
        colour = {"ran": "green", "cached": "cyan", "failed": "red"}[o.status]
        artifact = os.path.relpath(o.artifact) if o.artifact else ""
        table.add_row(o.name, o.kind, f"[{colour}]{o.status}[/]", f"{o.seconds:.1f}", artifact)
    Console(stderr=True).print(table)


@cli.command()
@recipe_argument
@set_option
@store_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan(recipe: str, overrides, store, as_json: bool) -> None:
    """Show RECIPE's stage graph: what each stage reads, which are cached, what would run, and each stage's
    disk and peak GPU memory, estimated from the models' config.json files (no weights are downloaded)."""
    from sakura_core.engine import Engine

    loaded = _load(recipe, overrides, store)
    engine = Engine(loaded)
    the_plan = engine.plan()
    statuses = engine.statuses(the_plan)
    rows = []
    for name, node in the_plan.stages.items():
        rows.append(
            {
                "stage": name,
                "kind": node.stage.kind_name,
                "plugin": node.plugin,
                "plugins": [c.plugin.label for c in node.credits],
                "reads": node.stage.depends_on,
                "fingerprint": node.fingerprint,
                **statuses[name],
            }
        )
    from sakura_core import estimate as est

    estimates = est.estimate_plan(the_plan, engine.env)  # from config.json files only; never an error
    gpu = est.local_gpu()
    for row in rows:
        found = estimates.stages.get(row["stage"])
        row["estimate"] = found.as_json() if found is not None else None
        if gpu and found is not None and found.memory and found.device == "gpu":
            row["estimate"]["fits_gpu"] = est.fits(found.memory_bytes, gpu)
    if as_json:
        click.echo(json.dumps({"recipe": loaded.name, "stages": rows, "models": estimates.models, "gpu": gpu}, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{loaded.name} ({loaded.path})", title_justify="left")
    for column in ("stage", "kind", "reads", "fingerprint", "status"):
        table.add_column(column, no_wrap=column != "reads")
    table.add_column("disk", justify="right", no_wrap=True)
    table.add_column("memory", justify="right", no_wrap=True)
    for row in rows:
        colour = "cyan" if row["status"] == "cached" else "yellow"
        found = estimates.stages.get(row["stage"])
        disk = est.human(found.disk_bytes) if found is not None and found.disk else "-"
        if found is not None and not found.disk and found.upload is not None:
            disk = f"upload {est.human(found.upload)}"
        memory = "-"
        if found is not None and found.memory:
            memory = f"{'GPU' if found.device == 'gpu' else 'CPU'} {est.human(found.memory_bytes)}"
        table.add_row(row["stage"], row["kind"], ", ".join(row["reads"]), row["fingerprint"][:12],
                      f"[{colour}]{row['status']}[/]", disk, memory)
    console = Console()
    console.print(table)
    for row in rows:
        for note in row["notes"]:
            console.print(f"  {escape(row['stage'])}: {escape(note)}", highlight=False)
    lines = [line for name, found in estimates.stages.items() if found is not None and (line := est.describe(name, found))]
    if lines:
        console.print("Estimated from the models' config.json (GPU: PyTorch's peak on one device, without the CUDA context):")
        for line in lines:
            console.print("  " + escape(line), highlight=False)
    models = [f"{alias} {est.count(m['params'])} params, {est.human(m['bytes'])}"
              + (" to download" if the_plan.sources[alias].model.source.downloads else "")
              for alias, m in estimates.models.items() if m]
    if models:
        console.print("  models: " + escape("; ".join(models)), highlight=False)
    if gpu:
        needs = {row["stage"]: row["estimate"]["memory_bytes"] for row in rows
                 if row["estimate"] and row["estimate"].get("fits_gpu") is not None}
        too_big = [f"{name} (~{est.human(n)})" for name, n in needs.items() if not est.fits(n, gpu)]
        verdict = ("does not fit: " + ", ".join(too_big)) if too_big else ("every stage fits" if needs else "no GPU estimate")
        console.print(f"  this GPU: {escape(gpu['name'])}, {est.human(gpu['total_bytes'])} ({est.human(gpu['free_bytes'])} free): {verdict}",
                      highlight=False)


@cli.command()
@recipe_argument
@set_option
def validate(recipe: str, overrides) -> None:
    """Check RECIPE (every key, plugin name and reference) without running anything."""
    loaded = _load(recipe, overrides)
    click.echo(f"{loaded.file}: ok ({len(loaded.stages)} stages, {len(loaded.models)} models)")


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False), required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--reference", is_flag=True, help="Print the recipe reference (markdown) of what the plugins register.")
@click.option("--plugin", "only", metavar="NAME", help="Only this plugin's entries (e.g. a package's own reference page).")
def plugins(recipe: str | None, as_json: bool, reference: bool, only: str | None) -> None:
    """List every plugin (with RECIPE, its plugin files too): version, code hash, hooks, and each registered
    entry with its options."""
    from sakura_core.listing import plugin_listing, print_listing

    loaded = _plugins()
    if recipe is not None:
        loaded = _load(recipe).plugins
    if reference:
        from sakura_core.reference import build

        click.echo(build(loaded, plugin=only).markdown, nl=False)
        return
    listing = plugin_listing(loaded, only)
    if as_json:
        click.echo(json.dumps(listing, indent=2))
    else:
        print_listing(listing)


@cli.command("new-plugin")
@click.argument("name")
@click.option("--kind", required=True, metavar="KIND",
              help="What the plugin registers: merge, dataset, trainer, publisher (or a kind another plugin declares).")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(), help="Where to create the package folder NAME.")
def new_plugin(name: str, kind: str, directory: str) -> None:
    """Write a plugin package NAME/ that installs and passes its tests as written."""
    from sakura_core import scaffold

    target = scaffold.new_plugin(name, kind, directory, plugins=_plugins())
    click.echo(scaffold.next_steps(target, name, kind, plugins=_plugins()))


@cli.group()
def cache() -> None:
    """Inspect and clean the artifact store."""


@cache.command("ls")
@click.argument("recipe", type=click.Path(dir_okay=False), required=False)
@store_option
def cache_ls(recipe: str | None, store: str | None) -> None:
    """List the artifacts of RECIPE's store (or of --store)."""
    from sakura_core.store import Store

    root = _store_root(recipe, store)
    for artifact in Store(root).list():
        m = artifact.manifest
        size = sum(f.stat().st_size for f in artifact.path.rglob("*") if f.is_file())
        click.echo(f"{artifact.fingerprint[:12]}  {m.get('kind', '?'):8} {m.get('stage', '?'):16} {size / 2**20:9.1f} MiB  {m.get('created', '')}")


@cache.command("gc")
@click.argument("recipes", type=click.Path(dir_okay=False), nargs=-1)
@store_option
def cache_gc(recipes: tuple[str, ...], store: str | None) -> None:
    """Remove unfinished writes; with RECIPES, also every artifact none of them uses."""
    from sakura_core.engine import Engine
    from sakura_core.store import Store

    if not recipes and not store:
        raise click.UsageError("name at least one recipe, or --store")
    root = _store_root(recipes[0] if recipes else None, store)
    keep: set[str] | None = None
    if recipes:
        keep = set()
        for recipe in recipes:
            engine = Engine(_load(recipe, store=store))
            the_plan = engine.plan()
            keep.update(n.fingerprint for n in the_plan.stages.values())
            keep.update(s.fingerprint for s in the_plan.sources.values())
    removed = Store(root).gc(keep)
    click.echo(f"removed {len(removed)} entries from {root}")


def _store_root(recipe: str | None, store: str | None):
    from pathlib import Path

    if store:
        return Path(store)
    if recipe is None:
        raise click.UsageError("name a recipe or --store")
    return _load(recipe).store_dir


def _add_plugin_commands() -> None:
    _plugins().pm.hook.sakura_register_commands(cli=cli)


def main(argv: list[str] | None = None) -> None:
    try:
        _add_plugin_commands()
        cli.main(args=argv, prog_name="sakura", standalone_mode=False)
    except SakuraError as error:
        _fail(error)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: finished artifacts are kept, the unfinished stage left nothing behind", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug in sakura or a plugin: one line, the traceback in a log
        _internal_error(exc)


def _internal_error(exc: BaseException) -> None:
    """One line naming the plugin whose code raised ``exc`` (or sakura) and the log file with the traceback."""
    import os
    import time
    import traceback
    from pathlib import Path

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sakura" / "logs"
    log = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        base.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(exc)))
        where = f"traceback in {log}"
    except OSError as write_error:
        where = f"no traceback written: {write_error.strerror or write_error}"
    who = _PLUGINS.blame(exc) if _PLUGINS is not None else None
    culprit = f"plugin {who.label}" if who else "sakura"
    first = str(exc).strip().splitlines()
    click.secho(f"internal error in {culprit}: {type(exc).__name__}" + (f": {first[0]}" if first else "") + f" ({where})",
                fg="red", err=True)
    sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()

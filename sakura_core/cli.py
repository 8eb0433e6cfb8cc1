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


def _load(recipe_path: str, overrides: tuple[str, ...] = (), store: str | None = None, variants: tuple[str, ...] = ()):
    """The recipe file's family: every variant it declares, validated (one recipe when it declares none)."""
    from sakura_core.recipe import load_family

    return load_family(recipe_path, list(overrides), plugins=_plugins(), store=store, only=list(variants))


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
variant_option = click.option("--variant", "variants", multiple=True, metavar="NAME",
                              help="Only this variant of the recipe (repeatable; default: every variant).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sakura-recipes", prog_name="sakura")
def cli() -> None:
    """sakura: merge, prepare data, fine-tune and publish LLMs from one declarative TOML recipe."""


@cli.command()
@recipe_argument
@click.option("--only", multiple=True, metavar="STAGE", help="Run only this stage (its inputs must be built).")
@click.option("--from", "from_", multiple=True, metavar="STAGE", help="Re-run this stage and everything after it.")
@click.option("--force", multiple=True, metavar="STAGE", help="Re-run this stage even if its artifact is cached.")
@variant_option
@set_option
@store_option
@click.option("--executor", default="local", show_default=True, metavar="NAME",
              help="What runs the stages: local (this process, one after another) or ray (a Ray cluster).")
@click.option("--address", metavar="ADDR", help="With --executor ray: the cluster to join (default: start Ray here).")
@click.option("-x", "--executor-option", "executor_options", multiple=True, metavar="KEY=VALUE",
              help="An option of the executor, e.g. -x retries=0 -x cpus_per_stage=2 (value parsed as TOML).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with every stage's outcome on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def run(recipe: str, only, from_, force, variants, overrides, store, executor: str, address, executor_options,
        as_json: bool, quiet: bool) -> None:
    """Run RECIPE stage by stage (every variant it declares; stages they share run once); cached stages are
    not run again."""
    from sakura_core.progress import quiet_libraries

    quiet_libraries()
    family = _load(recipe, overrides, store, variants)
    runner, runner_options = _executor(family, executor, address, executor_options)
    if not family.has_variants and executor == "local":
        from sakura_core.engine import Engine

        loaded = family.variants[""]
        with _stdout_to_stderr(), _reporter([(s.name, s.kind_name) for s in loaded.stages.values()], quiet or False) as reporter:
            result = Engine(loaded, reporter).run(only=list(only), from_=list(from_), force=list(force))
        if as_json:
            click.echo(json.dumps(result.as_json(), indent=2))
        elif not quiet:
            _print_summary(result.recipe.name, [(o, "") for o in result.outcomes])
        if result.error is not None:
            _fail(result.error)
        return
    from sakura_core.family import plan_family, run_family

    planned = plan_family(family, list(only), list(from_), list(force))
    rows = [(node.label, family.variants[node.members[0][0]].stages[node.members[0][1]].kind_name) for node in planned[0].nodes]
    with _stdout_to_stderr(), _reporter(rows, quiet or False) as reporter:
        done = run_family(family, reporter, family_plan=planned, executor=runner, executor_options=runner_options,
                          overrides=tuple(overrides), store=store)
    if as_json:
        click.echo(json.dumps(done.as_json(), indent=2))
    elif not quiet:
        seen: set[str] = set()
        shown = []
        for node in planned[0].nodes:
            variant, stage = node.members[0]
            outcome = next((o for o in done.results[variant].outcomes if o.name == stage), None)
            if outcome is not None and node.fingerprint not in seen:
                seen.add(node.fingerprint)
                shown.append((outcome, node.label))
        _print_summary(f"{family.name}: {len(family.variants)} variants", shown)
    if done.error is not None:
        _fail(done.error)


def _executor(family: Any, name: str, address: str | None, pairs: tuple[str, ...]) -> tuple[Any, Any]:
    """The executor ``--executor`` names and its options (``--address``, ``-x KEY=VALUE``), validated before any
    work."""
    from sakura_core.errors import OptionError, PluginError, RecipeError
    from sakura_core.options import validate_options
    from sakura_core.recipe import parse_value

    try:
        executor = family.plugins.executors.get(name)
    except PluginError as exc:
        raise RecipeError(f"--executor: {exc}") from None
    raw: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"-x {pair!r}: expected KEY=VALUE")
        raw[key.strip()] = parse_value(text.strip())
    if address:
        if executor.Options is None:
            raise RecipeError(f"--address: executor {name} takes no address")
        raw["address"] = address
    try:
        return executor, validate_options(executor.Options, raw)
    except OptionError as exc:
        flag = "--address" if exc.key == "address" else f"-x {exc.key}" if exc.key else "--executor"
        raise RecipeError(exc.detail, key=flag) from None


def _stdout_to_stderr() -> Any:
    """While stages run, what libraries print (trackio's banners, lm-eval's tables) goes to stderr: stdout is
    sakura's result alone, so ``run --json | jq`` works."""
    import contextlib

    return contextlib.redirect_stdout(sys.stderr)


def _print_summary(title: str, outcomes: list[tuple[Any, str]]) -> None:
    """A table of the stages that ran or were cached (in a family, one row per distinct stage, by its label)."""
    import os

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title), title_justify="left")
    for column in ("stage", "kind", "status", "seconds", "artifact"):
        table.add_column(column)
    for o, label in outcomes:
        colour = {"ran": "green", "cached": "cyan", "failed": "red"}.get(o.status, "yellow")
        artifact = os.path.relpath(o.artifact) if o.artifact else ""
        table.add_row(escape(label or o.name), o.kind, f"[{colour}]{o.status}[/]", f"{o.seconds:.1f}", artifact)
    Console(stderr=True).print(table)


@cli.command()
@recipe_argument
@variant_option
@set_option
@store_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan(recipe: str, variants, overrides, store, as_json: bool) -> None:
    """Show RECIPE's stage graph: what each stage reads, which are cached, what would run, and each stage's
    disk and peak GPU memory, estimated from the models' config.json files (no weights are downloaded); for
    a recipe with variants, the variant x stage grid (shared, cached or to run) with totals."""
    from sakura_core import estimate as est
    from sakura_core.planview import describe_plan, family_grid, print_family_plan, print_plan

    family = _load(recipe, overrides, store, variants)
    gpu = est.local_gpu()
    docs = {name: describe_plan(member, gpu) for name, member in family.variants.items()}
    if not family.has_variants:
        doc = docs[""]
        if as_json:
            click.echo(json.dumps({k: v for k, v in doc.items() if k not in ("path", "lines")}, indent=2))
        else:
            print_plan(doc)
        return
    grid = family_grid(docs)
    if as_json:
        click.echo(json.dumps({"recipe": family.name, "variants": {name: {k: v for k, v in doc.items() if k not in ("path", "lines")}
                                                                    for name, doc in docs.items()},
                               "grid": grid["grid"], "totals": grid["totals"], "gpu": gpu}, indent=2))
    else:
        print_family_plan(family.name, docs, grid)


@cli.command()
@recipe_argument
@variant_option
@set_option
@store_option
@click.option("--sort", "sort_by", metavar="METRIC", help="Order the variants by this metric, best first (e.g. reward_accuracy).")
@click.option("--json", "as_json", is_flag=True, help="The comparison as JSON (columns, rows, best values, curves).")
@click.option("--csv", "as_csv", is_flag=True, help="The table as CSV.")
@click.option("--markdown", "as_markdown", is_flag=True, help="The table as markdown (best values in bold).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write a self-contained page with the table and plots.")
def compare(recipe: str, variants, overrides, store, sort_by, as_json: bool, as_csv: bool, as_markdown: bool, html_path) -> None:
    """Put RECIPE's variants side by side: the values that differ, the final training metrics and every eval
    stage's results, from what is in the store (nothing runs); the best value of each column is marked."""
    from sakura_core import compare as cmp

    family = _load(recipe, overrides, store, variants)
    comparison = cmp.compare(family)
    order = comparison.sorted_by(sort_by)
    if html_path:
        from pathlib import Path

        from sakura_core.report import render

        target = Path(html_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(comparison, order), encoding="utf-8")
        click.echo(f"wrote {target}", err=True)
    if as_json:
        click.echo(json.dumps({**comparison.as_json(), "order": order}, indent=2, default=str))
    elif as_csv:
        click.echo(cmp.as_csv(comparison, order), nl=False)
    elif as_markdown:
        click.echo(cmp.as_markdown(comparison, order), nl=False)
    elif not html_path:
        _print_comparison(comparison, order)


def _print_comparison(comparison: Any, order: list[str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from sakura_core.compare import text

    best = comparison.best()
    table = Table(title=escape(f"{comparison.recipe}: {len(order)} variants (best value of a column in bold green)"),
                  title_justify="left")
    table.add_column("variant", no_wrap=True)
    for column in comparison.columns:
        table.add_column(escape(column.name), justify="right")
    for variant in order:
        row = comparison.rows[variant]
        cells = []
        for column in comparison.columns:
            cell = escape(text(row.get(column.name)))
            cells.append(f"[bold green]{cell}[/]" if best[column.name] is not None and row.get(column.name) == best[column.name]
                         else cell)
        table.add_row(escape(variant), *cells)
    Console().print(table)


@cli.command()
@recipe_argument
@set_option
def validate(recipe: str, overrides) -> None:
    """Check RECIPE (every key, plugin name and reference) without running anything."""
    family = _load(recipe, overrides)
    first = next(iter(family.variants.values()))
    variants = f"{len(family.variants)} variants, " if family.has_variants else ""
    click.echo(f"{first.file}: ok ({variants}{len(first.stages)} stages, {len(first.models)} models)")


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
    """Remove unfinished writes; with RECIPES, also every artifact none of them uses. Never what a live run
    (on any machine sharing the store) uses or is building."""
    from pathlib import Path

    from sakura_core.engine import Engine
    from sakura_core.store import Store

    if not recipes and not store:
        raise click.UsageError("name at least one recipe, or --store")
    root = _store_root(recipes[0] if recipes else None, store)
    keep: set[str] | None = None
    if recipes:
        keep = set()
        for recipe in recipes:
            for member in _load(recipe, store=store).variants.values():
                the_plan = Engine(member).plan()
                keep.update(n.fingerprint for n in the_plan.stages.values())
                keep.update(s.fingerprint for s in the_plan.sources.values())
    skipped: list[Path] = []
    removed = Store(root).gc(keep, skipped)
    left = f" (left {len(skipped)} in use by a live run)" if skipped else ""
    click.echo(f"removed {len(removed)} entries from {root}{left}")


def _store_root(recipe: str | None, store: str | None):
    from pathlib import Path

    if store:
        return Path(store)
    if recipe is None:
        raise click.UsageError("name a recipe or --store")
    return next(iter(_load(recipe).variants.values())).store_dir


def _add_plugin_commands() -> None:
    _plugins().pm.hook.sakura_register_commands(cli=cli)


INTERRUPTED = "interrupted: finished artifacts are kept, the unfinished stage left nothing behind"


def main(argv: list[str] | None = None) -> None:
    try:
        _add_plugin_commands()
        cli.main(args=argv, prog_name="sakura", standalone_mode=False)
    except SakuraError as error:
        _fail(error)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C inside a command into Abort (raised from the KeyboardInterrupt)
        interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
        click.echo(INTERRUPTED if interrupted else "aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # before click took over (plugin loading)
        click.echo(INTERRUPTED, err=True)
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

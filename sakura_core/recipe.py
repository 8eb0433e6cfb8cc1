"""TOML recipe -> validated ``Recipe``, before any work is done.

Every mistake becomes one ``RecipeError`` line naming the file and the key path:
``tiny.toml: stages.dpo.args.learnin_rate: unknown option (did you mean learning_rate?)``.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sakura_core.errors import OptionError, PluginError, RecipeError, did_you_mean, join_key
from sakura_core.options import validate_options
from sakura_core.plugins import Plugins
from sakura_core.registry import Registry
from sakura_core.variants import Variant, apply as apply_variant, declared, uses_placeholder
from sakura_core.stage import CheckEnv, ModelSource, StageKind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
TOP_LEVEL_KEYS = {"name": str, "description": str, "store": str, "plugins": list, "models": dict, "stages": dict,
                  "variants": dict, "matrix": dict}

# (type, default, meaning) of each top-level key and of the keys the engine itself reads in a model or stage
# table: docs/recipes.md is generated from these (python -m sakura_core.reference --write).
TOP_LEVEL_DOCS: dict[str, tuple[str, str, str]] = {
    "name": (
        "string",
        "the file name without `.toml`",
        "The recipe's name: the title of `sakura run`'s summary, the name each run is recorded under in the "
        "store, and the model name on published model cards and commit messages.",
    ),
    "description": (
        "string",
        '`""`',
        "Free text for the recipe's readers; sakura checks that it is a string and uses it nowhere else (a model "
        "card's opening paragraph is the publish stage's `description`).",
    ),
    "store": (
        "string",
        '`".sakura"`',
        "Directory of the artifact store, relative to the recipe's directory; `--store` and the `SAKURA_STORE` "
        "environment variable take precedence over it.",
    ),
    "plugins": (
        "list[string]",
        "`[]`",
        "Plugin files (Python modules, relative to the recipe's directory) loaded before the recipe is checked; "
        "a file's content hash is its version, so editing it re-runs the stages that use what it registers.",
    ),
    "models": (
        "table",
        "`{}`",
        "The input models, one key per alias (letters, digits, `_` and `-`): a shorthand string or a table with "
        "a `source` key and that source's options (see Models).",
    ),
    "variants": (
        "table",
        "`{}`",
        "Named variants, `[variants.NAME]`, each a table of overrides written with the dotted keys of `-s` "
        '(`"stages.dpo.args.learning_rate" = 1e-6`): each variant is the whole recipe with them applied, and '
        "`{variant}` in any string option is replaced by its name. `sakura run` runs them all (stages they share "
        "run once); `sakura compare` puts them side by side.",
    ),
    "matrix": (
        "table",
        "`{}`",
        'Keys to vary (`"stages.dpo.args.learning_rate" = [1e-6, 5e-7]`): every combination of the listed values is '
        "a variant, named after its values (`learning_rate-1e-06`); with `variants` too, each named variant is "
        "combined with each point.",
    ),
    "stages": (
        "table",
        "required",
        "The stages, one table per stage name (letters, digits, `_` and `-`, not a model alias), each with a "
        "`kind` and that kind's options; they run in dependency order (ties in file order).",
    ),
}
MODEL_KEY_DOCS: dict[str, tuple[str, str, str]] = {
    "source": (
        "string",
        "required in a table",
        "The model source that reads the table's other keys (`tiny`, `local`, `hub` or a plugin's); a "
        "shorthand string picks its source by its form instead.",
    ),
}
STAGE_KEY_DOCS: dict[str, tuple[str, str, str]] = {
    "kind": (
        "string",
        "required",
        "The stage kind (see below); every other key of the table is an option of that kind. There is no "
        "`depends_on`: a stage depends on the stages and models its options name.",
    ),
}


@dataclass
class ModelRef:
    alias: str
    source_name: str
    source: ModelSource
    options: Any


@dataclass
class Stage:
    name: str
    kind_name: str
    kind: StageKind
    options: Any
    references: dict[str, str]  # key path -> stage name or model alias

    @property
    def depends_on(self) -> list[str]:
        return list(dict.fromkeys(self.references.values()))


@dataclass
class Recipe:
    path: Path
    text: str  # the recipe as it ran: the file's text, or the data with overrides applied (see as_run)
    name: str
    variant: str  # its name in the file's family of variants; "" for a file without variants
    description: str
    store_dir: Path
    models: dict[str, ModelRef]
    stages: dict[str, Stage]
    plugins: Plugins

    @property
    def file(self) -> str:
        return self.path.name


def load_recipe(
    path: str | os.PathLike[str],
    overrides: list[str] = (),  # type: ignore[assignment]
    plugins: Plugins | None = None,
    store: str | None = None,
) -> Recipe:
    """Read, override and validate a recipe file without variants. Raises ``RecipeError`` / ``PluginError``."""
    path = Path(path)
    file = path.name
    text, data = _read(path)
    data = apply_overrides(data, overrides, file)
    if declared(data, file) is not None:
        raise RecipeError("the recipe declares variants: load it as a family (sakura_core.recipe.load_family)", file=file)
    return validate_recipe(data, path=path.resolve(), text=as_run(text, data, overrides), plugins=plugins, store=store)


@dataclass
class Family:
    """A recipe file's recipes: one per variant it declares, or the recipe alone (``variants == {"": recipe}``)."""

    path: Path
    name: str
    variants: dict[str, Recipe]
    declared: list[Variant] | None  # None: the file declares no variants

    @property
    def has_variants(self) -> bool:
        return self.declared is not None

    @property
    def plugins(self) -> Plugins:
        return next(iter(self.variants.values())).plugins

    def overrides(self, name: str) -> dict[str, Any]:
        """What makes variant ``name`` (dotted key -> value)."""
        return next((v.overrides for v in self.declared or [] if v.name == name), {})


def load_family(
    path: str | os.PathLike[str],
    overrides: list[str] = (),  # type: ignore[assignment]
    plugins: Plugins | None = None,
    store: str | None = None,
    only: list[str] = (),  # type: ignore[assignment]
) -> Family:
    """Read a recipe file and validate every variant it declares (``only``: these variants), each as a whole
    recipe, before any work. A file without variants is a family of one."""
    path = Path(path)
    file = path.name
    text, data = _read(path)
    data = apply_overrides(data, overrides, file)
    variants = declared(data, file)
    plugins = plugins or Plugins()
    if variants is None:
        if only:
            raise RecipeError(f"--variant {only[0]}: the recipe declares no variants", file=file)
        recipe = validate_recipe(data, path=path.resolve(), text=as_run(text, data, overrides), plugins=plugins, store=store)
        return Family(path.resolve(), recipe.name, {"": recipe}, None)
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise RecipeError(f"two variants are named {twice!r}", file=file, key="variants")
    for name in only:
        if name not in names:
            raise RecipeError(f"--variant {name}: no such variant{did_you_mean(name, names)} (variants: {', '.join(names)})",
                              file=file)
    recipes = {}
    for variant in variants:
        if only and variant.name not in only:
            continue
        member = apply_variant(data, variant, file)
        try:
            recipes[variant.name] = validate_recipe(member, path=path.resolve(), plugins=plugins, store=store,
                                                    text=as_run(text, member, [*overrides, *variant.changes()]),
                                                    variant=variant.name)
        except RecipeError as exc:
            where = join_key(f"variants.{variant.name}", exc.key)
            raise RecipeError(exc.detail, file=file, key=where) from None
    first = next(iter(recipes.values()))
    return Family(path.resolve(), first.name, recipes, variants)


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    file = path.name
    if not path.is_file():
        raise RecipeError("recipe file not found", file=str(path))
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): save it as UTF-8",
                          file=file) from None
    except OSError as exc:
        raise RecipeError(f"cannot read the recipe: {exc.strerror or exc}", file=str(path)) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"invalid TOML: {exc}", file=file) from None


def as_run(text: str, data: dict[str, Any], changes: list[str]) -> str:
    """The recipe text a run records and publishes: the file as written when nothing changed it, else the
    data it ran with, as TOML, headed by what changed (so the published recipe reproduces the model)."""
    if not changes:
        return text
    from sakura_core.tomltext import dumps

    header = "".join(f"# applied: {change}\n" for change in changes)
    return "# the recipe as it ran\n" + header + "\n" + dumps(data)


def validate_recipe(
    data: dict[str, Any],
    *,
    path: Path,
    text: str = "",
    plugins: Plugins | None = None,
    store: str | None = None,
    variant: str = "",
) -> Recipe:
    file = path.name
    if not variant and uses_placeholder(data):
        raise RecipeError("uses {variant}, but the recipe declares no variants ([variants.NAME] or [matrix])", file=file)
    for key, value in data.items():
        if key not in TOP_LEVEL_KEYS:
            raise RecipeError(f"unknown key{did_you_mean(key, TOP_LEVEL_KEYS)}", file=file, key=key)
        expected = TOP_LEVEL_KEYS[key]
        if not isinstance(value, expected):
            raise RecipeError(f"must be a {_type_word(expected)}", file=file, key=key)
    recipe_name = data.get("name", path.stem)
    if not _usable_name(recipe_name):
        raise RecipeError("must be a name, not a path: no '/', '\\', '..', control characters or an empty name "
                          f"(got {recipe_name!r})", file=file, key="name")
    stages_raw = data.get("stages", {})
    if not stages_raw:
        raise RecipeError("the recipe has no stages (add a [stages.NAME] table)", file=file, key="stages")

    plugins = plugins or Plugins()
    for i, plugin_file in enumerate(data.get("plugins", [])):
        if not isinstance(plugin_file, str):
            raise RecipeError("must be a path to a plugin file", file=file, key=join_key("plugins", i))
        try:
            plugins.load_file(path.parent / plugin_file)
        except PluginError as exc:
            raise RecipeError(str(exc), file=file, key=join_key("plugins", i)) from None

    source_env = CheckEnv(plugins=plugins, recipe_dir=path.parent, names=set())
    models = {
        alias: _parse_model(alias, spec, plugins, file, source_env) for alias, spec in data.get("models", {}).items()
    }
    names = set(models)
    for name in stages_raw:
        if not NAME_RE.match(name):
            raise RecipeError("stage names are letters, digits, '_' and '-'", file=file, key=f"stages.{name}")
        if name in models:
            raise RecipeError(f"stage {name!r} has the same name as a model", file=file, key=f"stages.{name}")
        names.add(name)

    env = CheckEnv(plugins=plugins, recipe_dir=path.parent, names=names)
    stages = {name: _parse_stage(name, table, env, file) for name, table in stages_raw.items()}
    stages = _resolve_stages(stages, env, file)
    _check_cycles(stages, file)

    store_dir = Path(store or os.environ.get("SAKURA_STORE") or data.get("store") or ".sakura")
    if not store_dir.is_absolute():
        store_dir = path.parent / store_dir
    return Recipe(
        path=path,
        text=text,
        name=recipe_name,
        variant=variant,
        description=data.get("description", ""),
        store_dir=store_dir,
        models=models,
        stages=stages,
        plugins=plugins,
    )


def _usable_name(name: str) -> bool:
    """The recipe's name names run records in the store and model cards: no path, no control characters."""
    return bool(name.strip()) and name not in (".", "..") and not any(c in name for c in "/\\") and name.isprintable()


# -- models ----------------------------------------------------------------------------------------
def _parse_model(alias: str, spec: Any, plugins: Plugins, file: str, env: CheckEnv) -> ModelRef:
    key = f"models.{alias}"
    if not NAME_RE.match(alias):
        raise RecipeError("model names are letters, digits, '_' and '-'", file=file, key=key)
    sources = plugins.model_sources
    if isinstance(spec, str):
        try:
            source_name, raw = _split_model_shorthand(spec, sources, env.recipe_dir)
            source = sources.get(source_name)
            raw = source.parse(raw)
        except (ValueError, OptionError) as exc:
            raise RecipeError(str(exc), file=file, key=key) from None
    elif isinstance(spec, dict):
        raw = dict(spec)
        source_name = raw.pop("source", None)
        if source_name is None:
            raise RecipeError("a model table needs a 'source' key (tiny, local, hub, ...)", file=file, key=key)
        if source_name not in sources:
            raise RecipeError(
                f"unknown model source {source_name!r}{did_you_mean(source_name, sources.names())}",
                file=file,
                key=f"{key}.source",
            )
        source = sources.get(source_name)
    else:
        raise RecipeError("must be a string or a table", file=file, key=key)
    options = _validate_options(source.Options, raw, file, key)
    try:
        source.check(options, env)
    except OptionError as exc:
        raise RecipeError(exc.detail, file=file, key=join_key(key, exc.key)) from None
    return ModelRef(alias=alias, source_name=source_name, source=source, options=options)


def _split_model_shorthand(spec: str, sources: Registry[ModelSource], recipe_dir: Path) -> tuple[str, str]:
    """``name:rest`` goes to the source called ``name``; any other string to the first source (in registration
    order) whose ``claims`` accepts it: a path to the local source, ``org/name[@rev]`` to the Hub's."""
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in sources:
        return scheme, rest
    for entry in sources.entries.values():
        if entry.implementation.claims(spec, recipe_dir):
            return entry.name, spec
    raise OptionError(None, f"no model source reads {spec!r}: write SOURCE:..., with SOURCE one of {', '.join(sources.names())}")


# -- stages ----------------------------------------------------------------------------------------
def _parse_stage(name: str, table: Any, env: CheckEnv, file: str) -> Stage:
    prefix = f"stages.{name}"
    if not isinstance(table, dict):
        raise RecipeError("must be a table", file=file, key=prefix)
    raw = dict(table)
    kind_name = raw.pop("kind", None)
    kinds = env.plugins.stage_kinds
    if kind_name is None:
        raise RecipeError(f"missing 'kind' (one of: {', '.join(kinds.names())})", file=file, key=prefix)
    if not isinstance(kind_name, str):
        raise RecipeError(f"must be a string, one of: {', '.join(kinds.names())}", file=file, key=f"{prefix}.kind")
    if kind_name not in kinds:
        raise RecipeError(
            f"unknown stage kind {kind_name!r}{did_you_mean(str(kind_name), kinds.names())}",
            file=file,
            key=f"{prefix}.kind",
        )
    kind: StageKind = kinds.get(kind_name)
    options = _validate_options(kind.Options, raw, file, prefix)
    try:
        kind.check(options, env)
    except OptionError as exc:
        raise RecipeError(exc.detail, file=file, key=join_key(prefix, exc.key)) from None
    except PluginError as exc:
        raise RecipeError(str(exc), file=file, key=prefix) from None
    return Stage(name=name, kind_name=kind_name, kind=kind, options=options, references=_references(name, kind, options, env, file))


def _references(name: str, kind: StageKind, options: Any, env: CheckEnv, file: str) -> dict[str, str]:
    references = kind.references(options)
    for key, target in references.items():
        if target == name:
            raise RecipeError("a stage cannot read its own output", file=file, key=join_key(f"stages.{name}", key))
        if target not in env.names:
            raise RecipeError(
                f"no stage or model named {target!r}{did_you_mean(target, env.names)}",
                file=file,
                key=join_key(f"stages.{name}", key),
            )
    return references


def _resolve_stages(stages: dict[str, Stage], env: CheckEnv, file: str) -> dict[str, Stage]:
    """Second pass, once every stage is parsed: defaults that depend on other stages (an eval stage's
    reference model is the model its train stage started from)."""
    whole = CheckEnv(plugins=env.plugins, recipe_dir=env.recipe_dir, names=env.names, stages=dict(stages))
    resolved = {}
    for name, stage in stages.items():
        try:
            options = stage.kind.resolve(stage.options, whole)
        except OptionError as exc:
            raise RecipeError(exc.detail, file=file, key=join_key(f"stages.{name}", exc.key)) from None
        if options is not stage.options:
            stage = Stage(name, stage.kind_name, stage.kind, options, _references(name, stage.kind, options, env, file))
        resolved[name] = stage
    return resolved


def _check_cycles(stages: dict[str, Stage], file: str) -> None:
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done" or name not in stages:
            return
        if state.get(name) == "active":
            cycle = trail[trail.index(name) :] + [name]
            first = stages[cycle[0]]
            key = next(k for k, v in first.references.items() if v == cycle[1])
            raise RecipeError(f"cycle: {' -> '.join(cycle)}", file=file, key=f"stages.{cycle[0]}.{key}")
        state[name] = "active"
        for dep in stages[name].depends_on:
            visit(dep, trail + [name])
        state[name] = "done"

    for name in stages:
        visit(name, [])


# -- options ---------------------------------------------------------------------------------------
def _validate_options(model: type[BaseModel], raw: Any, file: str, prefix: str) -> Any:
    try:
        return validate_options(model, raw)
    except OptionError as exc:
        raise RecipeError(exc.detail, file=file, key=join_key(prefix, exc.key)) from None


# -- overrides -------------------------------------------------------------------------------------
def apply_overrides(data: dict[str, Any], overrides: list[str], file: str) -> dict[str, Any]:
    """Apply ``-s stages.dpo.args.learning_rate=1e-6`` overrides; values are parsed as TOML values."""
    data = copy.deepcopy(data)
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"override {override!r} is not KEY=VALUE", file=file)
        value = parse_value(text.strip())
        parts = key.split(".")
        table = data
        for i, part in enumerate(parts[:-1]):
            node = table.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError("cannot set a key inside a non-table value", file=file, key=".".join(parts[: i + 1]))
            table = node
        table[parts[-1]] = value
    return data


def parse_value(text: str) -> Any:
    """A TOML value (``1e-6``, ``true``, ``[1, 2]``, ``"x"``); anything else is taken as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _type_word(expected: type) -> str:
    return {str: "string", list: "list", dict: "table"}[expected]

"""The stage graph of a recipe: dependency order and fingerprints.

A stage's fingerprint hashes its validated options, its stage kind and every plugin that takes part in
it (the stage kind's and those of the registry entries its options select: name, distribution version and
code hash, plus each entry's own ``version``), its external inputs (data files by content, Hub revisions)
and the fingerprints of the stages and models it reads. Equal fingerprint, equal artifact: that is what
makes caching safe. What an input artifact holds is checked separately, by content digest (``engine``): a
rebuilt input is never paired with an output made from the old one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sakura_core.errors import RecipeError, SakuraError
from sakura_core.hashing import hash_json
from sakura_core.plugins import PluginInfo, Plugins
from sakura_core.recipe import ModelRef, Recipe, Stage
from sakura_core.stage import CheckEnv, SourceEnv


@dataclass
class SourceNode:
    model: ModelRef
    fingerprint: str
    lineage: dict[str, Any]


@dataclass(frozen=True)
class Credit:
    """A plugin taking part in a stage, and what it provides there: ``(what, name, implementation)`` for each
    entry (``("merge method", "slerp", Slerp())``)."""

    plugin: PluginInfo
    entries: tuple[tuple[str, str, Any], ...]

    @property
    def provides(self) -> tuple[str, ...]:
        return tuple(f"{what} {name}" for what, name, _ in self.entries)

    @property
    def implementations(self) -> tuple[Any, ...]:
        return tuple(impl for _, _, impl in self.entries)

    def lineage(self) -> dict[str, Any]:
        """The plugin and each entry it provides, as manifests, lineage files and model cards record them."""
        return {
            **self.plugin.lineage(),
            "provides": list(self.provides),
            "entries": [
                {"what": what, "name": name, "version": getattr(impl, "version", "1"),
                 "description": impl.summary() if hasattr(impl, "summary") else "",
                 **{key: getattr(impl, key) for key in ("url", "citation") if getattr(impl, key, "")}}
                for what, name, impl in self.entries
            ],
        }


@dataclass
class StageNode:
    stage: Stage
    fingerprint: str
    plugin: str  # the plugin that provides the stage kind
    inputs: dict[str, str] = field(default_factory=dict)  # referenced name -> fingerprint
    credits: list[Credit] = field(default_factory=list)  # every plugin taking part, the stage kind's first
    external: dict[str, Any] = field(default_factory=dict)  # what external_inputs resolved (Hub commits, file hashes)


@dataclass
class Plan:
    recipe: Recipe
    sources: dict[str, SourceNode]
    stages: dict[str, StageNode]  # in execution order

    def upstream(self, name: str) -> list[str]:
        """Every stage ``name`` depends on, directly or not, in execution order (``name`` excluded)."""
        needed: set[str] = set()
        todo = [name]
        while todo:
            for dep in self.recipe.stages[todo.pop()].depends_on:
                if dep in self.recipe.stages and dep not in needed:
                    needed.add(dep)
                    todo.append(dep)
        return [s for s in self.stages if s in needed]

    def downstream(self, name: str) -> list[str]:
        """``name`` and every stage that depends on it, in execution order."""
        affected = {name}
        for stage_name in self.stages:
            if any(dep in affected for dep in self.recipe.stages[stage_name].depends_on):
                affected.add(stage_name)
        return [s for s in self.stages if s in affected]


def execution_order(recipe: Recipe) -> list[str]:
    """Stages in dependency order; ties keep the order of the recipe file."""
    order: list[str] = []
    placed: set[str] = set()
    remaining = list(recipe.stages)
    while remaining:
        for name in remaining:
            deps = [d for d in recipe.stages[name].depends_on if d in recipe.stages]
            if all(d in placed for d in deps):
                order.append(name)
                placed.add(name)
                remaining.remove(name)
                break
        else:  # pragma: no cover - load_recipe already rejected cycles
            raise RuntimeError("cycle in recipe")
    return order


def build_plan(recipe: Recipe, env: SourceEnv, only_models: set[str] | None = None) -> Plan:
    """Fingerprint every model source and stage (no weights are downloaded)."""
    sources = {}
    for alias, model in recipe.models.items():
        if only_models is not None and alias not in only_models:
            continue
        try:
            fingerprint, lineage = model.source.fingerprint(model.options, env)
        except SakuraError as exc:  # say which entry of the recipe it is about
            error = SakuraError(f"{recipe.file}: models.{alias}: {exc}")
            error.exit_code = exc.exit_code
            raise error from None
        sources[alias] = SourceNode(model, fingerprint, {"name": alias, "kind": "model", "source": model.source_name, **lineage})

    check_env = CheckEnv(plugins=recipe.plugins, recipe_dir=recipe.path.parent, names={*recipe.models, *recipe.stages})
    stages: dict[str, StageNode] = {}
    for name in execution_order(recipe):
        stage = recipe.stages[name]
        inputs = {
            ref: (stages[ref].fingerprint if ref in stages else sources[ref].fingerprint) for ref in stage.depends_on
        }
        credits = stage_credits(recipe, name)
        try:
            external = stage.kind.external_inputs(stage.options, check_env)
        except SakuraError as exc:  # a Hub commit that cannot be resolved: say which stage asked
            error = SakuraError(f"{recipe.file}: stages.{name}: {exc}")
            error.exit_code = exc.exit_code
            raise error from None
        material = {
            "kind": stage.kind_name,
            "plugins": [[c.plugin.name, c.plugin.version, list(c.provides), [getattr(i, "version", "1") for i in c.implementations]]
                        for c in credits],
            "options": stage.options.model_dump(mode="json"),
            "inputs": {key: inputs[ref] for key, ref in sorted(stage.references.items())},
            "external": external,
        }
        stages[name] = StageNode(stage, hash_json(material), credits[0].plugin.name, inputs, credits, external)
    return Plan(recipe, sources, stages)


def stage_credits(recipe: Recipe, name: str) -> list[Credit]:
    """The plugins taking part in stage ``name``: the stage kind's, then those of the entries it uses."""
    stage = recipe.stages[name]
    plugins: Plugins = recipe.plugins
    kind = plugins.stage_kinds.entry(stage.kind_name)
    found: dict[str, tuple[PluginInfo, list[tuple[str, str, Any]]]] = {
        kind.plugin.name: (kind.plugin, [("stage kind", kind.name, kind.implementation)])
    }
    for attr, entry_name in stage.kind.uses(stage.options):
        try:
            registry = plugins.registry(attr)
            entry = registry.entry(entry_name)
        except SakuraError as exc:  # the stage's check let an unknown name through: still the recipe's mistake
            raise RecipeError(str(exc), file=recipe.file, key=f"stages.{name}") from None
        _, entries = found.setdefault(entry.plugin.name, (entry.plugin, []))
        if (registry.what, entry.name) not in [(what, n) for what, n, _ in entries]:
            entries.append((registry.what, entry.name, entry.implementation))
    return [Credit(info, tuple(entries)) for info, entries in found.values()]


def stage_libraries(credits: list[Credit]) -> dict[str, str | None]:
    """``{distribution: installed version}`` the stage's result depends on (None: not installed): what every
    implementation taking part declares in ``libraries``. Recorded, not fingerprinted: a library upgrade
    should not silently throw away hours of training; ``plan`` shows the drift and ``--force`` rebuilds."""
    from importlib.metadata import PackageNotFoundError, version

    wanted: list[str] = []
    for credit in credits:
        for impl in credit.implementations:
            wanted += list(getattr(impl, "libraries", ()) or ())
    found: dict[str, str | None] = {}
    for dist in dict.fromkeys(wanted):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found

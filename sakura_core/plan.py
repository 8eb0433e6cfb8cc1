"""The stage graph of a recipe: dependency order and fingerprints.

A stage's fingerprint hashes its validated options, its stage kind and the plugins that implement it
(names and versions), its external inputs (data files by content, Hub revisions) and the fingerprints of
the stages and models it reads. Equal fingerprint, equal artifact: that is what makes caching safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sakura_core.errors import SakuraError
from sakura_core.hashing import hash_json
from sakura_core.recipe import ModelRef, Recipe, Stage
from sakura_core.stage import CheckEnv, SourceEnv


@dataclass
class SourceNode:
    model: ModelRef
    fingerprint: str
    lineage: dict[str, Any]


@dataclass
class StageNode:
    stage: Stage
    fingerprint: str
    plugin: str  # the plugin that provides the stage kind
    inputs: dict[str, str] = field(default_factory=dict)  # referenced name -> fingerprint


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
        kind_entry = recipe.plugins.stage_kinds.entry(stage.kind_name)
        material = {
            "kind": stage.kind_name,
            "plugin": [kind_entry.plugin.name, kind_entry.plugin.version],
            "implementations": stage.kind.implementation_versions(stage.options, recipe.plugins),
            "options": stage.options.model_dump(mode="json"),
            "inputs": {key: inputs[ref] for key, ref in sorted(stage.references.items())},
            "external": stage.kind.external_inputs(stage.options, check_env),
        }
        stages[name] = StageNode(stage, hash_json(material), kind_entry.plugin.name, inputs)
    return Plan(recipe, sources, stages)

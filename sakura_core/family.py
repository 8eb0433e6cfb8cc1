"""Running a family of variants: every variant planned, each distinct stage (by fingerprint) run once,
stages shared by more variants first.

Variants share the store, so a stage that is the same in several variants (the merge, the data, a reference
pass) has one fingerprint and one artifact. Scheduling the distinct stages by how many variants share them
runs the shared work first, so every variant's own stages find it done; a stage's inputs always come
first, because an input is shared by at least the variants that share the stage. A failing stage fails the
variants that contain it and skips what depends on it there; the other variants go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sakura_core.engine import Engine, RunResult, select_stages
from sakura_core.errors import SakuraError
from sakura_core.plan import Plan
from sakura_core.progress import Reporter
from sakura_core.recipe import Family
from sakura_core.stage import StageOutcome

if TYPE_CHECKING:  # pragma: no cover
    from sakura_core.executor import Executor


@dataclass
class Node:
    """A distinct stage of the family: one fingerprint, the (variant, stage) pairs that have it."""

    fingerprint: str
    members: list[tuple[str, str]]
    label: str = ""

    @property
    def variants(self) -> list[str]:
        return [variant for variant, _ in self.members]


@dataclass
class FamilyPlan:
    family: Family
    plans: dict[str, Plan]  # variant -> its plan
    nodes: list[Node]  # distinct stages, in the order they run

    def node_of(self, variant: str, stage: str) -> Node:
        return next(n for n in self.nodes if (variant, stage) in n.members)


@dataclass
class FamilyResult:
    family: Family
    plan: FamilyPlan
    results: dict[str, RunResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results.values())

    @property
    def error(self) -> SakuraError | None:
        failed = {name: r.error for name, r in self.results.items() if r.error is not None}
        if not failed:
            return None
        error = SakuraError(f"{len(failed)} of {len(self.results)} variants failed: "
                            + "; ".join(f"{name}: {e}" for name, e in failed.items()))
        error.exit_code = max(e.exit_code for e in failed.values())
        return error

    def as_json(self) -> dict[str, Any]:
        first = next(iter(self.results.values()))
        return {
            "recipe": self.family.name,
            "recipe_path": str(self.family.path),
            "store": str(first.recipe.store_dir),
            "ok": self.ok,
            "error": str(self.error) if self.error else None,
            "variants": {name: {"ok": r.ok, "error": str(r.error) if r.error else None,
                                "stages": [o.as_json() for o in r.outcomes]}
                         for name, r in self.results.items()},
        }


def label_of(stage: str, variants: list[str], everyone: int) -> str:
    if len(variants) == everyone:
        return stage
    if len(variants) <= 2:
        return f"{stage} [{', '.join(variants)}]"
    return f"{stage} [{len(variants)} variants]"


def plan_family(family: Family, only: list[str] = (), from_: list[str] = (), force: list[str] = ()  # type: ignore[assignment]
                ) -> tuple[FamilyPlan, dict[str, set[str]]]:
    """Every variant's plan, the distinct stages in the order they run, and what is forced per variant."""
    plans: dict[str, Plan] = {}
    forced: dict[str, set[str]] = {}
    selected: dict[str, list[str]] = {}
    for name, recipe in family.variants.items():
        plans[name] = Engine(recipe).plan()
        selected[name], forced[name] = select_stages(plans[name], list(only), list(from_), list(force))
    by_fingerprint: dict[str, Node] = {}
    for variant, stages in selected.items():
        for stage in stages:
            fingerprint = plans[variant].stages[stage].fingerprint
            by_fingerprint.setdefault(fingerprint, Node(fingerprint, [])).members.append((variant, stage))
    order = list(family.variants)

    def rank(node: Node) -> tuple[int, int, int]:
        variant, stage = node.members[0]
        return -len(node.members), order.index(variant), list(plans[variant].stages).index(stage)

    nodes = sorted(by_fingerprint.values(), key=rank)
    for node in nodes:
        node.label = label_of(node.members[0][1], node.variants, len(family.variants))
    return FamilyPlan(family, plans, nodes), forced


def run_family(family: Family, reporter: Reporter | None = None, only: list[str] = (), from_: list[str] = (),  # type: ignore[assignment]
               force: list[str] = (), family_plan: tuple[FamilyPlan, dict[str, set[str]]] | None = None,  # type: ignore[assignment]
               executor: Executor | None = None, executor_options: Any = None,
               overrides: tuple[str, ...] = (), store: str | None = None) -> FamilyResult:
    """Run every distinct stage of the family once with ``executor`` (default: ``local``) and its validated
    options; ``overrides`` and ``store`` say how the family was loaded, for executors whose workers load it
    again."""
    from sakura_core.executor import Work

    reporter = reporter or Reporter()
    plan, forced = family_plan or plan_family(family, only, from_, force)
    executor = executor or family.plugins.executors.get("local")
    engines = {
        name: Engine(recipe, reporter, labels={stage: plan.node_of(name, stage).label for stage in plan.plans[name].stages
                                               if any((name, stage) in n.members for n in plan.nodes)})
        for name, recipe in family.variants.items()
    }
    work = Work(plan, forced, engines, reporter, overrides=overrides, store=store)
    try:
        executor.run(work, executor_options)
    finally:
        next(iter(engines.values())).store.locks.release()  # the run is over: gc may remove what it used
    outcomes = {member: work.done[node.fingerprint] for node in plan.nodes if node.fingerprint in work.done
                for member in node.members}
    result = FamilyResult(family, plan)
    for name, recipe in family.variants.items():
        run = RunResult(recipe, plan.plans[name])
        run.outcomes = [outcomes[(name, stage)] for stage in plan.plans[name].stages if (name, stage) in outcomes]
        failure = next((o for o in run.outcomes if o.status == "failed"), None) or next(
            (o for o in run.outcomes if o.status == "skipped"), None)
        if failure is not None:
            run.error = SakuraError(failure.error or f"stage {failure.name} failed")
            run.error.exit_code = failure.exit_code or 1
        result.results[name] = run
    first = next(iter(engines.values()))
    first.store.record_run(family.name, result.as_json())
    return result


def skipped(plan: Plan, stage: str, why: str) -> StageOutcome:
    node = plan.stages[stage]
    return StageOutcome(stage, node.stage.kind_name, node.plugin, "skipped", node.fingerprint,
                        error=f"stage {stage} skipped: {why}", exit_code=1)

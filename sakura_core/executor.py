"""Executors: what runs a family's distinct stages (the ``executors`` registry).

The family planner (``sakura_core.family``) decides *what* runs: each distinct stage (one fingerprint, shared
by the variants that have it) once, with the stages it reads before it. An executor decides *where and
when*: ``local`` runs them one after another in this process (the default); ``ray`` submits each to a Ray
cluster as a task once its inputs exist. Both go through ``Work``, which holds everything that must not
differ between executors: whether a stage is served from the store, which stages a failure blocks, and the
engine that runs a stage in a process.

Every process that runs a stage shares the store through its locks (``sakura_core.locks``): an executor
never needs to coordinate builds itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sakura_core.registry import Implementation

if TYPE_CHECKING:  # pragma: no cover
    from sakura_core.engine import Engine
    from sakura_core.family import FamilyPlan, Node
    from sakura_core.progress import Reporter
    from sakura_core.stage import StageOutcome


@dataclass(frozen=True)
class StageJob:
    """A stage as another process rebuilds it: the recipe file, how it was loaded, and which stage.

    A worker loads the recipe again from these (a ``Recipe`` holds plugins and open state that do not
    travel), plans it and checks the fingerprint is the one the driver planned.
    """

    recipe_path: str
    overrides: tuple[str, ...]
    store: str | None
    variant: str
    stage: str
    fingerprint: str
    forced: bool
    label: str


class Work:
    """A family's distinct stages and what every executor asks of them (see the module docstring)."""

    def __init__(self, plan: FamilyPlan, forced: dict[str, set[str]], engines: dict[str, Engine], reporter: Reporter,
                 overrides: tuple[str, ...] = (), store: str | None = None):
        self.plan = plan
        self.nodes: list[Node] = plan.nodes
        self.forced = forced
        self.engines = engines
        self.reporter = reporter
        self.overrides = overrides
        self.store_option = store
        self.done: dict[str, StageOutcome] = {}  # fingerprint -> outcome, as executors finish nodes
        self.broken: dict[str, str] = {}  # fingerprint -> why a stage reading it cannot run
        self._estimates: dict[str, Any] = {}  # variant -> its plan's estimates, made when first asked

    @property
    def store_dir(self) -> Path:
        return next(iter(self.engines.values())).store.root

    def is_forced(self, node: Node) -> bool:
        return any(stage in self.forced[variant] for variant, stage in node.members)

    def inputs(self, node: Node) -> list[str]:
        """Fingerprints of the distinct stages of this run that ``node`` reads (inputs built earlier, or not
        selected, are not waited for)."""
        variant, stage = node.members[0]
        stages = self.plan.plans[variant].stages
        scheduled = {n.fingerprint for n in self.nodes}
        return [stages[dep].fingerprint for dep in stages[stage].stage.depends_on
                if dep in stages and stages[dep].fingerprint in scheduled]

    def blocked(self, node: Node) -> str | None:
        """Why ``node`` cannot run (an input failed, or was skipped for a failure upstream), or None."""
        return next((self.broken[f] for f in self.inputs(node) if f in self.broken), None)

    def finish(self, node: Node, outcome: StageOutcome) -> None:
        """Record a node's outcome: ``done`` holds every finished node; a failure blocks what reads it."""
        self.done[node.fingerprint] = outcome
        if outcome.status in ("failed", "skipped"):
            self.broken[node.fingerprint] = self.blocked(node) or f"{node.members[0][1]} failed"

    def skip(self, node: Node, why: str) -> StageOutcome:
        from sakura_core.family import skipped

        variant, stage = node.members[0]
        self.reporter.stage_finished(node.label, "skipped", 0.0, why)
        return skipped(self.plan.plans[variant], stage, why)

    def cached(self, node: Node) -> StageOutcome | None:
        """The stage's outcome when the store already serves it (checked where the driver runs, without the
        build lock: a stage another process is building right now is scheduled, and waits there)."""
        variant, stage = node.members[0]
        return self.engines[variant].serve_cached(self.plan.plans[variant], stage, self.is_forced(node))

    def execute(self, node: Node) -> StageOutcome:
        """Run (or serve) the stage here, in this process."""
        variant, stage = node.members[0]
        return self.engines[variant].execute(self.plan.plans[variant], stage, forced=self.is_forced(node))

    def job(self, node: Node) -> StageJob:
        variant, stage = node.members[0]
        store = str(Path(self.store_option).resolve()) if self.store_option else None  # workers start elsewhere
        return StageJob(str(self.plan.family.path), self.overrides, store, variant, stage,
                        node.fingerprint, self.is_forced(node), node.label)

    def gpus(self, node: Node) -> int:
        """GPUs the stage asks a cluster with GPUs for (its stage kind says: a train stage one per launched
        process, a dataset stage none)."""
        variant, stage = node.members[0]
        declared = self.plan.plans[variant].stages[stage].stage
        return declared.kind.gpus(declared.options)

    def memory(self, node: Node) -> int | None:
        """Bytes of memory the plan estimates the stage needs at its peak (None: no estimate)."""
        from sakura_core import estimate as est

        variant, stage = node.members[0]
        if variant not in self._estimates:
            self._estimates[variant] = est.estimate_plan(self.plan.plans[variant], self.engines[variant].env)
        found = self._estimates[variant].stages.get(stage)
        return found.memory_bytes if found is not None else None

    def kind(self, node: Node) -> str:
        variant, stage = node.members[0]
        return self.plan.plans[variant].stages[stage].stage.kind_name


class Executor(Implementation):
    """Runs a family's distinct stages: the contract of the ``executors`` registry.

    ``run(work, options)`` runs every node of ``work.nodes`` (or serves it from the store, ``work.cached``, or
    skips it when ``work.blocked`` says an input failed: ``work.skip``) with each node's inputs
    (``work.inputs``) finished before it, and hands each outcome to ``work.finish``. Stages report their
    own start and end to ``work.reporter``; an executor adds where they run. ``Options`` validates what ``sakura run --executor NAME`` passes (``--address``).
    """

    def run(self, work: Work, options: Any) -> None:
        raise NotImplementedError


def run_job(job: StageJob, reporter: Reporter | None = None) -> StageOutcome:
    """Run one stage in this process from a ``StageJob`` (an executor's worker calls this): load the recipe,
    plan it, check the fingerprint is the driver's, run the stage under the store's locks."""
    from sakura_core.engine import Engine
    from sakura_core.errors import SakuraError
    from sakura_core.recipe import load_family
    from sakura_core.stage import StageOutcome

    family = load_family(job.recipe_path, list(job.overrides), store=job.store, only=[job.variant] if job.variant else [])
    recipe = family.variants[job.variant]
    engine = Engine(recipe, reporter, labels={job.stage: job.label})
    try:
        plan = engine.plan()
        node = plan.stages[job.stage]
        if node.fingerprint != job.fingerprint:
            raise SakuraError(f"stage {job.stage}: its fingerprint here ({node.fingerprint[:12]}) is not the one the driver "
                              f"planned ({job.fingerprint[:12]}): this machine has other code, plugins or inputs")
        return engine.execute(plan, job.stage, forced=job.forced)
    except SakuraError as exc:
        return StageOutcome(job.stage, "", "", "failed", job.fingerprint, error=str(exc), exit_code=exc.exit_code)
    finally:
        engine.store.locks.release()  # a worker outlives the task: gc may remove what it used from now on

"""What a stage kind and a model source implement, and what the engine hands them.

These are the two extension points the engine itself calls. Everything narrower (merge methods, dataset
adapters, trainers, publishers) is defined by the stage-kind plugin that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sakura_core.registry import Implementation

if TYPE_CHECKING:  # pragma: no cover
    from sakura_core.estimate import Estimate
    from sakura_core.options import Options
    from sakura_core.plugins import Plugins
    from sakura_core.progress import Reporter, Task
    from sakura_core.store import Artifact, Store


@dataclass
class CheckEnv:
    """What a plugin may consult while checking its options (no I/O, no heavy imports)."""

    plugins: Plugins
    recipe_dir: Path
    names: set[str]  # every stage name and model alias of the recipe
    stages: dict[str, Any] = field(default_factory=dict)  # name -> the recipe's parsed Stage (in resolve only)


class StageKind(Implementation):
    """A kind of stage (``merge``, ``dataset``, ``train``, ``publish``, ...).

    Subclasses set ``Options`` (the stage's TOML table minus ``kind``) and implement ``references`` and
    ``run``; ``check``, ``uses``, ``external_inputs``, ``estimate`` and ``outdated`` are optional (and
    ``libraries``, the distributions whose version its results depend on).
    """

    Options: ClassVar[type[Options]]
    # Short word for the stage's output, shown by ``plan`` and stored in the manifest.
    produces: ClassVar[str] = "artifact"

    def references(self, options: Any) -> dict[str, str]:
        """The stages and models this stage reads, as ``{key path in the stage table: name}``."""
        return {}

    def check(self, options: Any, env: CheckEnv) -> None:
        """Deeper validation before any work (plugin names, nested plugin options).

        Raise ``OptionError(key, message)`` with ``key`` relative to the stage table.
        """

    def resolve(self, options: Any, env: CheckEnv) -> Any:
        """Fill in what depends on the rest of the recipe, once every stage is parsed: ``env.stages`` maps each
        stage name to its parsed stage (``kind_name``, ``options``, ``references``). Return the options, or a
        copy with the defaults filled (``options.model_copy(update=...)``); the references are read again."""
        return options

    def external_inputs(self, options: Any, env: CheckEnv) -> dict[str, Any]:
        """Fingerprint material for inputs outside the store (local data files by content, Hub revisions)."""
        return {}

    def uses(self, options: Any) -> list[tuple[str, str]]:
        """The registry entries this stage's options select, as ``(registry, name)`` pairs (``("merge_methods",
        "slerp")``): the plugins behind them, with their versions and code hashes, become part of the
        fingerprint and are credited in the lineage."""
        return []

    def estimate(self, options: Any, inputs: dict[str, dict[str, Any]], env: CheckEnv) -> Estimate | None:
        """Disk and memory this stage will take, for ``sakura plan`` (optional; None: no estimate).

        ``inputs`` maps each name the stage reads to what is known of it without any work: ``config`` (a
        model's config.json as a dict) for models and model-producing stages, ``max_length`` for datasets;
        an empty dict when nothing is known. Return ``sakura_core.estimate.Estimate`` with ``output`` set
        for the stages downstream. No I/O, no heavy imports; the built-in stages size models with
        ``sakura_models.shapes``.
        """
        return None

    def gpus(self, options: Any) -> int:
        """GPUs the stage uses when its machine has them: what it asks of a cluster executor (``--executor
        ray``) where the cluster has GPUs. Default 1; 0 for a stage that never computes on one."""
        return 1

    def outdated(self, options: Any, artifact: Artifact, env: SourceEnv) -> str | None:
        """Why a cached artifact of this stage no longer stands for what running it would do, or None.

        The engine serves a stage from the store when its fingerprint and inputs match; a stage whose work
        lives outside the store too (a published repo that may have been deleted or overwritten since) says
        here what changed, in a few words (``"the Hub no longer holds commit 1a2b3c on tester/x"``), and the
        stage runs again. Called by ``plan`` and ``run`` for each cached artifact of the stage (not when the
        stage runs anyway); keep it to a cheap check, and answer None when it cannot tell (offline).
        """
        return None
    def headline(self, metrics: dict[str, Any]) -> dict[str, tuple[float, bool]]:
        """The numbers ``sakura compare`` puts side by side for this stage, from its metrics: ``{name: (value,
        higher_is_better)}`` (a train stage's final loss, an eval stage's scores); empty: none."""
        return {}

    def curves(self, artifact: Path, metrics: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
        """Series ``sakura compare --html`` plots per variant (``{"loss": [(step, value), ...]}``); empty: none."""
        return {}

    def run(self, ctx: StageContext) -> dict[str, Any] | None:
        """Do the work, writing the result into ``ctx.output_dir``; return metrics (JSON-able)."""
        raise NotImplementedError


class ModelSource(Implementation):
    """Where a model of the recipe's ``[models]`` table comes from (``tiny``, ``local``, ``hub``, ...)."""

    Options: ClassVar[type[Options]]
    # Whether materializing fetches the weights from elsewhere: ``sakura plan`` says "to download" by their size.
    downloads: ClassVar[bool] = False

    def parse(self, text: str) -> dict[str, Any]:
        """Turn the shorthand after ``name:`` (or the whole string) into an options dict."""
        raise NotImplementedError

    def claims(self, text: str, recipe_dir: Path) -> bool:
        """Whether a ``[models]`` string without a ``name:`` prefix is this source's (``./dir`` is the local
        source's, ``org/name`` the Hub's); sources are asked in registration order."""
        return False

    def check(self, options: Any, env: CheckEnv) -> None:
        """Cheap checks when the recipe loads (no network): raise ``OptionError(key, message)``."""

    def fingerprint(self, options: Any, env: SourceEnv) -> tuple[str, dict[str, Any]]:
        """``(fingerprint, lineage)`` without downloading weights; lineage is shown on model cards."""
        raise NotImplementedError

    def materialize(self, options: Any, env: SourceEnv, fingerprint: str) -> Path:
        """A local directory holding the model (config, safetensors, tokenizer)."""
        raise NotImplementedError

    def config(self, options: Any, env: SourceEnv, fingerprint: str) -> dict[str, Any] | None:
        """The model's config.json as a dict, without downloading weights, for ``sakura plan``'s estimates
        (optional; None when unknown). Called after ``fingerprint``."""
        return None

    def footprint(self, config: dict[str, Any]) -> dict[str, int] | None:
        """``{"params": parameter count, "bytes": size of the weights}`` of a model with this config, for
        ``sakura plan``'s model summary (optional; None when the architecture is unknown). No I/O."""
        return None


@dataclass
class SourceEnv:
    recipe_dir: Path
    store: Store
    reporter: Reporter
    plugins: Plugins | None = None  # every registry (the engine always sets it)


@dataclass(frozen=True)
class InputArtifact:
    """An input of a stage: a model source or another stage's artifact."""

    name: str  # the stage name or model alias the recipe used
    path: Path
    fingerprint: str
    kind: str  # "model" for model sources, else the stage kind
    manifest: dict[str, Any]
    digest: str = ""  # what it holds: an artifact's content digest, a model source's fingerprint


@dataclass(frozen=True)
class StageInfo:
    """A stage as the lifecycle hooks see it."""

    name: str
    kind: str
    plugin: str
    fingerprint: str
    options: Any


@dataclass
class StageOutcome:
    name: str
    kind: str
    plugin: str
    status: str  # "ran", "cached", "failed", "skipped"
    fingerprint: str
    artifact: Path | None = None
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    exit_code: int = 0  # for failed stages: the exit code the CLI should end with

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "plugin": self.plugin,
            "status": self.status,
            "fingerprint": self.fingerprint,
            "artifact": str(self.artifact) if self.artifact else None,
            "seconds": round(self.seconds, 3),
            "metrics": self.metrics,
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class StageContext:
    """Everything a stage's ``run`` gets."""

    name: str
    kind: str
    options: Any
    output_dir: Path  # write the result here; it becomes the artifact when run() returns
    work_dir: Path  # survives a crash: checkpoints for resuming live here
    inputs: dict[str, InputArtifact]
    recipe_path: Path
    recipe_text: str
    plugins: Plugins
    reporter: Reporter
    fingerprint: str
    lineage: list[dict[str, Any]]  # every upstream source and stage, oldest first
    store: Store  # the run's artifact store, for stages that keep artifacts of their own (caches)
    credits: list[dict[str, Any]] = field(default_factory=list)  # the plugins taking part in this stage
    external: dict[str, Any] = field(default_factory=dict)  # what external_inputs resolved at plan time: run with it
    label: str = ""  # its row in the live view: the stage name, or "name [variant]" in a family of variants
    variant: str = ""  # the variant of the recipe file being run ("" for a recipe without variants)

    @property
    def recipe_dir(self) -> Path:
        return self.recipe_path.parent

    def input(self, name: str) -> InputArtifact:
        return self.inputs[name]

    def progress(self, description: str, total: float | None = None, unit: str = "") -> Task:
        """A progress bar in the live view (a log line per step without a terminal)."""
        return self.reporter.task(f"{self.name}: {description}", total=total, unit=unit)

    def log(self, message: str) -> None:
        self.reporter.log(f"{self.name}: {message}")

    def metric(self, **values: Any) -> None:
        """Show live metrics (loss, throughput) next to the stage in the progress view."""
        self.reporter.stage_metrics(self.label or self.name, values)

"""The hooks the core calls. A plugin implements them with functions decorated by ``sakura_core.hookimpl``.

A plugin is any module (or object) with such functions. Built-in plugins in ``plugins/`` use exactly this
API; third-party packages expose their module through the entry-point group ``sakura``; a recipe may load
plugin files beside it by listing them under ``plugins = [...]``.

The core declares three registries here (stage kinds, model sources and executors). A stage-kind plugin declares the
registries it needs from ``sakura_declare_registries``, each with its own hook
(``sakura_register_merge_methods``, ...), defined and documented beside its contract in that plugin;
docs/hooks.md documents them all. Registry hooks receive ``register(name, implementation, replace=False)``.

Plugin modules must stay cheap to import: import torch, transformers, trl and friends inside the functions
that use them, so that ``sakura --help``, ``plugins`` and ``validate`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from sakura_core.registry import Register, RegistrySpec

if TYPE_CHECKING:  # pragma: no cover - typing only
    import click

    from sakura_core.executor import Executor
    from sakura_core.stage import ModelSource, StageInfo, StageKind, StageOutcome

hookspec = pluggy.HookspecMarker("sakura")
hookimpl = pluggy.HookimplMarker("sakura")


@hookspec
def sakura_declare_registries(declare: Any) -> None:
    """Declare the registries this plugin's stage kinds read: ``declare(RegistrySpec(...))``.

    A ``sakura_core.registry.RegistrySpec`` names the hook that fills the registry (a function decorated with
    ``sakura_core.hookspec``), the base class its entries must be instances of, and how the reference docs
    and ``sakura new-plugin`` render it. The registry is then ``plugins.<attr>`` for every plugin.
    """


@hookspec
def sakura_register_stage_kinds(register: Register[StageKind]) -> None:
    """Register stage kinds: ``register("merge", MergeStage())``.

    A stage kind is a ``sakura_core.stage.StageKind``: it validates its own table of the recipe, names
    the stages and models it reads, and does the stage's work into an output directory that the core
    turns into an artifact. ``merge``, ``dataset``, ``train`` and ``publish`` are stage kinds too.
    """


@hookspec
def sakura_register_model_sources(register: Register[ModelSource]) -> None:
    """Register model sources: ``register("tiny", TinyModelSource())``.

    A model source is a ``sakura_core.stage.ModelSource``: it turns an entry of the recipe's ``[models]``
    table into a fingerprint (cheap: no download) and, when a stage needs the weights, a local directory.
    """


@hookspec
def sakura_register_executors(register: Register[Executor]) -> None:
    """Register executors: ``register("ray", RayExecutor())``.

    An executor is a ``sakura_core.executor.Executor``: given a family's distinct stages (``Work``), it
    decides where and when each runs (``sakura run --executor NAME``); ``local`` runs them in this process.
    """


@hookspec
def sakura_before_stage(stage: StageInfo) -> None:
    """Called just before a stage starts its work (not for cached stages).

    ``stage`` carries the stage's name, kind, fingerprint and validated options. Use it for logging,
    tracing or notifications; an exception here stops the run before the stage does any work.
    """


@hookspec
def sakura_after_stage(stage: StageInfo, outcome: StageOutcome) -> None:
    """Called after every stage of a run, whether it ran, was cached or failed.

    ``outcome.status`` is ``"ran"``, ``"cached"`` or ``"failed"``; ``outcome.metrics`` holds what the
    stage reported and ``outcome.artifact`` the artifact directory (``None`` when it failed).
    """


@hookspec
def sakura_register_commands(cli: click.Group) -> None:
    """Add commands to the ``sakura`` CLI: ``@cli.command() def mycommand(): ...``."""


# The core's own registries: the two contracts the engine itself calls.
CORE_REGISTRIES: tuple[RegistrySpec[Any], ...] = (
    RegistrySpec(
        attr="model_sources",
        what="model source",
        hookspec=sakura_register_model_sources,
        contract="sakura_core.stage:ModelSource",
        title="Models",
        named_by="the form of a `[models]` entry, or its `source` key",
    ),
    RegistrySpec(
        attr="stage_kinds",
        what="stage kind",
        hookspec=sakura_register_stage_kinds,
        contract="sakura_core.stage:StageKind",
        title="Stages",
        named_by="`kind` in a `[stages.NAME]` table",
    ),
    RegistrySpec(
        attr="executors",
        what="executor",
        hookspec=sakura_register_executors,
        contract="sakura_core.executor:Executor",
        title="Executors",
        named_by="`sakura run --executor NAME`",
    ),
)

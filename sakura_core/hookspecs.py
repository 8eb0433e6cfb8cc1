"""The whole plugin contract of sakura, in one file.

A plugin is any module (or object) with functions decorated by ``sakura_core.hookimpl`` whose names match
the specs below. Built-in plugins in ``plugins/`` use exactly this API; third-party packages expose their
module through the entry-point group ``sakura``; a recipe may load plugin files beside it by listing them
under ``plugins = [...]``.

Registry hooks receive a ``register(name, implementation)`` callback. The core keeps one table per
registry, remembers which plugin registered each name, and refuses a name registered twice (naming both
plugins). Plugin modules must stay cheap to import: import torch, transformers, trl and friends inside
the functions that use them, so that ``sakura --help``, ``plugins`` and ``validate`` stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    import click

    from sakura_core.stage import StageInfo, StageOutcome

hookspec = pluggy.HookspecMarker("sakura")
hookimpl = pluggy.HookimplMarker("sakura")

Register = Callable[[str, Any], None]


@hookspec
def sakura_register_stage_kinds(register: Register) -> None:
    """Register stage kinds: ``register("merge", MergeStage())``.

    A stage kind is a ``sakura_core.stage.StageKind``: it validates its own table of the recipe, names
    the stages and models it reads, and does the stage's work into an output directory that the core
    turns into an artifact. ``merge``, ``dataset``, ``train`` and ``publish`` are stage kinds too.
    """


@hookspec
def sakura_register_model_sources(register: Register) -> None:
    """Register model sources: ``register("tiny", TinyModelSource())``.

    A model source is a ``sakura_core.stage.ModelSource``: it turns an entry of the recipe's ``[models]``
    table into a fingerprint (cheap: no download) and, when a stage needs the weights, a local directory.
    """


@hookspec
def sakura_register_merge_methods(register: Register) -> None:
    """Register merge methods: ``register("slerp", sakura_merge.MergeMethod(...))``.

    A merge method is a tensor function plus a pydantic options model; the merge executor owns reading,
    devices, streaming and writing. See ``sakura_merge.methods`` for the contract.
    """


@hookspec
def sakura_register_dataset_adapters(register: Register) -> None:
    """Register dataset adapters: ``register("orca", sakura_data.Adapter(...))``.

    An adapter declares the columns it needs and maps one source row to sakura's canonical format
    (``prompt``/``chosen``/``rejected`` message lists for preference data, ``messages`` for SFT).
    """


@hookspec
def sakura_register_trainers(register: Register) -> None:
    """Register trainers: ``register("dpo", sakura_trl.Trainer(...))``. Used by ``kind = "train"`` stages."""


@hookspec
def sakura_register_publishers(register: Register) -> None:
    """Register publishers: ``register("hub", ...)``. Used by ``kind = "publish"`` stages."""


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

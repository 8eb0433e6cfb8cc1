"""The evaluator contract: what an eval stage's ``evaluator = "..."`` names, what it gets and what it returns.

An evaluator is an ``Evaluator``: an ``Options`` model for the eval stage's ``options`` table, the other
inputs it reads besides the model (``inputs``: a dataset stage, a reference model, given in the stage's
``inputs`` table), and ``run(job)``, which measures ``job.model`` and returns an ``EvalResult``. The eval stage owns the rest: resolving the model and the other inputs, the artifact
(``results.json`` with the results, the settings that produced them and the library versions), the
fingerprint (the model, the options and whatever ``external_inputs`` adds: task files by content) and
the lineage the model card reads.

This module imports no torch and no lm-eval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sakura_core.options import NoOptions
from sakura_core.registry import Implementation

if TYPE_CHECKING:  # pragma: no cover
    from sakura_core.stage import CheckEnv, InputArtifact


@dataclass
class EvalJob:
    """What ``Evaluator.run`` gets."""

    model: InputArtifact
    """The model evaluated: ``path`` (a transformers model directory), ``name``, ``fingerprint``, ``digest``."""
    inputs: dict[str, InputArtifact]
    """The stage's other inputs, by their key in its ``inputs`` table (``dataset``, ``reference``)."""
    options: Any
    """The evaluator's validated ``Options``."""
    output_dir: Path
    """Write samples and generations here (the stage writes ``results.json`` itself)."""
    work_dir: Path
    """Scratch space that survives a crash."""
    recipe_dir: Path
    """Relative paths in the options (task files, prompt files) mean this directory."""
    device: str
    """``"cuda"`` when a GPU is there, else ``"cpu"``."""
    progress: Callable[..., Any]
    """``progress(description, total, unit)`` -> a progress bar."""
    log: Callable[[str], None]
    """One line for the user."""


@dataclass
class EvalResult:
    """What ``Evaluator.run`` returns."""

    results: dict[str, dict[str, float]]
    """Task -> metric -> value; a metric's standard error under ``<metric>_stderr``."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What produced the numbers (few-shot per task, limit, chat template, seed, batch size, ...)."""
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Task -> what the model card's ``model-index`` says of it: ``dataset`` (a Hub id), ``config``, ``split``,
    ``num_fewshot``, ``name`` (a readable name)."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    """Records a person can read (``{"prompt": ..., "completion": ...}``): kept in the artifact, the first
    few shown on the model card."""


class Evaluator(Implementation):
    """An evaluator (``lm-eval``, ``preference``, ``generate``, ...)."""

    Options: ClassVar[Any] = NoOptions
    inputs: ClassVar[dict[str, str]] = {}
    """The other inputs it reads, ``{key: what it must be}``, named in the eval stage's ``inputs`` table
    (``inputs = { dataset = "data" }``): they run before the stage and take part in its fingerprint."""
    required_inputs: ClassVar[tuple[str, ...]] = ()
    """Inputs that must be given (or filled by ``resolve``)."""
    needs_chat_template: ClassVar[bool] = False
    """It prompts the model through its chat template: a model without one fails before any work."""

    def resolve(self, options: Any, inputs: dict[str, str], model: str, env: CheckEnv) -> tuple[Any, dict[str, str]]:
        """Defaults that depend on other stages, once every stage is parsed (``env.stages``): ``model`` is the
        evaluated model's name. Return ``(options, inputs)``, filled where needed."""
        return options, inputs

    def external_inputs(self, options: Any, env: CheckEnv) -> dict[str, Any]:
        """Fingerprint material outside the store: task files and their data, by content."""
        return {}

    def estimate(self, options: Any, config: dict[str, Any] | None, env: CheckEnv) -> Any:
        """Peak memory and time for ``sakura plan`` from the model's config.json (None: no estimate)."""
        return None

    def run(self, job: EvalJob) -> EvalResult:
        """Measure ``job.model``."""
        raise NotImplementedError

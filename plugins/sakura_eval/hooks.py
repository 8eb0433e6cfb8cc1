"""The registry the eval stage reads: evaluators, filled by ``sakura_register_evaluators``.

Cheap to import (no pydantic): the CLI declares this registry on every start. The contract itself is
``sakura_eval.contract``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sakura_core import hookspec
from sakura_core.registry import Register, RegistrySpec

if TYPE_CHECKING:  # pragma: no cover
    from sakura_eval.contract import Evaluator


@hookspec
def sakura_register_evaluators(register: Register[Evaluator]) -> None:
    """Register evaluators: ``register("lm-eval", LmEval())``. Used by ``kind = "eval"`` stages.

    An evaluator is a ``sakura_eval.Evaluator``: an ``Options`` model for the stage's ``options`` table, the
    stages and models those options name, and ``run(job)``, which measures the model and returns an
    ``EvalResult`` (per task and metric, with stderr where there is one).
    """


EVALUATORS: RegistrySpec[Evaluator] = RegistrySpec(
    attr="evaluators",
    what="evaluator",
    hookspec=sakura_register_evaluators,
    contract="sakura_eval.contract:Evaluator",
    title="Evaluators",
    named_by="`evaluator` in an eval stage (its options in the stage's `options` table)",
    render="sakura_eval.docs:render_evaluator",
)

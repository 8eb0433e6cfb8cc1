"""Built-in plugin sakura_eval: the ``eval`` stage kind and the ``lm-eval``, ``preference`` and ``generate``
evaluators."""

from sakura_core import hookimpl


@hookimpl
def sakura_declare_registries(declare):
    from sakura_eval.hooks import EVALUATORS

    declare(EVALUATORS)


@hookimpl
def sakura_register_stage_kinds(register):
    from sakura_eval.stage import EvalStage

    register("eval", EvalStage())


@hookimpl
def sakura_register_evaluators(register):
    from sakura_eval.generate import Generate
    from sakura_eval.lm_harness import LmEval
    from sakura_eval.preference import Preference

    register("lm-eval", LmEval())
    register("preference", Preference())
    register("generate", Generate())

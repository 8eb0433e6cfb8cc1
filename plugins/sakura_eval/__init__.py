"""Built-in plugin sakura_eval: the ``eval`` stage kind and its evaluators (lm-eval, preference, generate).

Third-party evaluators subclass ``sakura_eval.Evaluator`` (see ``sakura_eval.contract``) and register an
instance from ``sakura_register_evaluators``.
"""

__all__ = ["EvalJob", "EvalResult", "Evaluator"]


def __getattr__(name: str):
    # Lazy, so that importing the plugin module (every CLI start) does not import pydantic.
    if name in __all__:
        from sakura_eval import contract

        return getattr(contract, name)
    raise AttributeError(name)

"""The ``eval`` stage kind: one evaluator measuring one model; the artifact holds the results.

Checks the stage's table without importing torch or lm-eval. The artifact is ``results.json`` (results per
task and metric with stderr, the settings that produced them, the library versions) and
``samples.jsonl`` (what a person can read: generations, per-sample records).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from sakura_core.errors import OptionError, PluginError, StageError
from sakura_core.options import Options, validate_options
from sakura_core.stage import CheckEnv, StageContext, StageKind

RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"


class EvalOptions(Options):
    """``kind = "eval"``: measures a model with an evaluator (lm-evaluation-harness tasks, held-out preference
    accuracy, sample generations); the artifact holds the results per task and metric, the settings that
    produced them and the library versions. A publish stage of the same model puts them on its model card."""

    model: str
    """Model to evaluate: a model alias or a stage that produces a model (merge, train)."""
    evaluator: str
    """Evaluator that measures it (see Evaluators below)."""
    inputs: dict[str, str] = Field(default_factory=dict)
    """The other stages and models the evaluator reads, by the keys it names (``dataset``, ``reference``: see
    its entry under Evaluators)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The evaluator's own options (see its entry under Evaluators)."""


def evaluator_options(evaluator: Any, options: EvalOptions) -> Any:
    return validate_options(evaluator.Options, options.options, "options")


class EvalStage(StageKind):
    Options = EvalOptions
    produces = "evaluation"
    libraries = ("torch", "transformers")

    def references(self, options: EvalOptions) -> dict[str, str]:
        return {"model": options.model, **{f"inputs.{key}": name for key, name in options.inputs.items()}}

    def check(self, options: EvalOptions, env: CheckEnv) -> None:
        try:
            evaluator = env.plugins.evaluators.get(options.evaluator)
        except PluginError as exc:
            raise OptionError("evaluator", str(exc)) from None
        for key in options.inputs:
            if key not in evaluator.inputs:
                takes = ", ".join(evaluator.inputs) or "none"
                raise OptionError(f"inputs.{key}", f"evaluator {options.evaluator} reads no input {key!r} (its inputs: {takes})")
        evaluator.check(evaluator_options(evaluator, options), env)

    def resolve(self, options: EvalOptions, env: CheckEnv) -> EvalOptions:
        evaluator = env.plugins.evaluators.get(options.evaluator)
        before = evaluator_options(evaluator, options)
        after, inputs = evaluator.resolve(before, dict(options.inputs), options.model, env)
        missing = [key for key in evaluator.required_inputs if key not in inputs]
        if missing:
            raise OptionError("inputs", f"evaluator {options.evaluator} needs inputs.{missing[0]}: "
                                        f"{evaluator.inputs.get(missing[0], '')}".rstrip(": "))
        if after is before and inputs == options.inputs:
            return options
        return options.model_copy(update={"options": after.model_dump(mode="json", by_alias=True, exclude_unset=True),
                                          "inputs": inputs})

    def uses(self, options: EvalOptions) -> list[tuple[str, str]]:
        return [("evaluators", options.evaluator)]

    def external_inputs(self, options: EvalOptions, env: CheckEnv) -> dict[str, Any]:
        evaluator = env.plugins.evaluators.get(options.evaluator)
        return evaluator.external_inputs(evaluator_options(evaluator, options), env)

    def estimate(self, options: EvalOptions, inputs: dict[str, dict[str, Any]], env: CheckEnv) -> Any:
        evaluator = env.plugins.evaluators.get(options.evaluator)
        config = inputs.get(options.model, {}).get("config")
        return evaluator.estimate(evaluator_options(evaluator, options), config if isinstance(config, dict) else None, env)

    def headline(self, metrics: dict[str, Any]) -> dict[str, tuple[float, bool]]:
        """Every task's metrics (not their stderr), ``task metric``; lower is better only where the evaluator says
        so (lm-eval's higher_is_better) or the name says loss or perplexity."""
        told = (metrics.get("settings") or {}).get("higher_is_better") or {}
        out = {}
        for task, values in (metrics.get("results") or {}).items():
            for metric, value in (values or {}).items():
                if metric.endswith("_stderr") or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                higher = (told.get(task) or {}).get(metric.split(",")[0])
                if higher is None:
                    higher = not any(word in metric for word in ("loss", "perplexity", "bits_per_byte"))
                out[f"{task} {metric}"] = (float(value), bool(higher))
        return out

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from sakura_eval.contract import EvalJob

        options: EvalOptions = ctx.options
        evaluator = ctx.plugins.evaluators.get(options.evaluator)
        evaluator_opts = evaluator_options(evaluator, options)
        model = ctx.input(options.model)
        if evaluator.needs_chat_template or getattr(evaluator_opts, "apply_chat_template", False):
            require_chat_template(model.path, options.model, options.evaluator)
        job = EvalJob(
            model=model, inputs={key: ctx.input(name) for key, name in options.inputs.items()}, options=evaluator_opts,
            output_dir=ctx.output_dir, work_dir=ctx.work_dir, recipe_dir=ctx.recipe_dir, device=compute_device(),
            progress=ctx.progress, log=ctx.log,
        )
        with oom_hint(options.evaluator):
            result = evaluator.run(job)
        document = {"evaluator": options.evaluator, "model": model.name, "results": result.results,
                    "tasks": result.tasks, "settings": result.settings}
        (ctx.output_dir / RESULTS_FILE).write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
        if result.samples:
            with open(ctx.output_dir / SAMPLES_FILE, "w", encoding="utf-8") as fh:
                for sample in result.samples:
                    fh.write(json.dumps(sample, ensure_ascii=False, default=str) + "\n")
        ctx.log("; ".join(f"{task}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items() if not k.endswith("_stderr"))
                          for task, values in result.results.items()))
        metrics = {**document, "samples": result.samples[:SHOWN_SAMPLES]}
        tracked = self._log_to_training_run(ctx, model.manifest.get("metrics") or {}, document)
        if tracked:
            metrics["tracked_in"] = tracked
        return metrics

    def _log_to_training_run(self, ctx: StageContext, trained: dict[str, Any], document: dict[str, Any]) -> list[str]:
        """The scores, into the tracker run of the training that made the model (when it reported to one)."""
        tracking = trained.get("tracking")
        if not isinstance(tracking, dict):
            return []
        from sakura_trl.tracking import log_eval_results

        scores = {f"eval/{ctx.name}/{name.replace(' ', '/')}": value for name, (value, _) in self.headline(document).items()}
        return log_eval_results(tracking, scores, trained.get("steps"), log=ctx.log)


SHOWN_SAMPLES = 3  # samples kept in the manifest (the card shows them); the artifact's samples.jsonl has all

def compute_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def require_chat_template(path: Any, name: str, evaluator: str) -> None:
    """One line before any work when the evaluation prompts through a chat template the model lacks."""
    from pathlib import Path

    config = Path(path) / "tokenizer_config.json"
    try:
        has = bool(json.loads(config.read_text()).get("chat_template"))
    except (OSError, ValueError):
        has = False
    has = has or (Path(path) / "chat_template.jinja").is_file() or (Path(path) / "chat_template.json").is_file()
    if not has:
        raise StageError(f"model {name} has no chat template, which evaluator {evaluator} prompts through: "
                         "set apply_chat_template = false, or evaluate a model with a chat template")


class oom_hint:
    """CUDA out of memory during an evaluation: one line that says what to change."""

    def __init__(self, evaluator: str):
        self.evaluator = evaluator

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc is None:
            return False
        import torch

        if isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc)):
            raise StageError(f"out of GPU memory evaluating with {self.evaluator}: lower options.batch_size, or "
                             "evaluate on a GPU with more memory (sakura plan estimates it)") from None
        return False

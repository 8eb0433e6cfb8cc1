"""``evaluator = "preference"``: DPO's implicit-reward accuracy and margin on held-out preference pairs.

On a dataset stage's held-out split (its ``test_size`` split), the model's reward for an answer is
``beta * (log p_model(answer) - log p_reference(answer))``; the accuracy is the share of pairs where the
chosen answer's reward beats the rejected one's, the margin its mean difference, and the mean
log-likelihoods of the chosen and rejected answers come with them. trl's ``DPOTrainer.evaluate`` computes
them, so the numbers are exactly trl's own DPO eval metrics on the same pairs. The reference defaults to the
model the train stage started from, and ``beta`` to the train stage's.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from sakura_core.errors import StageError
from sakura_core.options import Options
from sakura_eval.contract import EvalJob, EvalResult, Evaluator

# trl's eval metric -> the name in the results
METRICS = {
    "eval_rewards/accuracies": "reward_accuracy",
    "eval_rewards/margins": "reward_margin",
    "eval_rewards/chosen": "reward_chosen",
    "eval_rewards/rejected": "reward_rejected",
    "eval_logps/chosen": "logps_chosen",
    "eval_logps/rejected": "logps_rejected",
    "eval_loss": "loss",
}
DEFAULT_BETA = 0.1  # trl's DPOConfig default


class PreferenceOptions(Options):
    """Options of ``evaluator = "preference"``."""

    split: str = "test"
    """Split of the dataset to score: the held-out pairs a dataset stage's ``test_size`` makes."""
    beta: float | None = Field(None, gt=0)
    """DPO's beta, which scales the rewards; unset: the train stage's (``args.beta``), else trl's 0.1."""
    batch_size: int = Field(8, ge=1)
    """Pairs per forward pass."""
    max_length: int | None = Field(None, ge=1)
    """Longest prompt + answer in tokens (longer ones are truncated as in training); unset: the dataset's limit."""


class Preference(Evaluator):
    """Held-out preference accuracy: DPO's implicit reward on a dataset stage's held-out pairs (trl's metrics)."""

    Options = PreferenceOptions
    inputs = {
        "dataset": "a dataset stage whose held-out split holds the preference pairs",
        "reference": "the reference model of the rewards (a model or a stage); default: the model the train stage "
                     "started from",
    }
    required_inputs = ("dataset", "reference")
    libraries = ("trl", "datasets")

    def resolve(self, options: PreferenceOptions, inputs: dict[str, str], model: str, env: Any) -> tuple[Any, dict[str, str]]:
        """The reference and beta of the train stage that made ``model``, when the recipe did not say."""
        train = env.stages.get(model)
        if train is None or "model" not in train.references or "dataset" not in train.references:
            return options, inputs  # not a train stage: both must be given
        inputs = {"reference": train.references["model"], **inputs}
        if options.beta is None:
            beta = (getattr(train.options, "args", {}) or {}).get("beta")
            if isinstance(beta, (int, float)) and not isinstance(beta, bool):
                options = options.model_copy(update={"beta": float(beta)})
        return options, inputs

    def estimate(self, options: PreferenceOptions, config: dict[str, Any] | None, env: Any) -> Any:
        from sakura_eval.estimate import two_model_estimate

        return two_model_estimate(config, options.batch_size, options.max_length or 2048)

    def run(self, job: EvalJob) -> EvalResult:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import DPOConfig, DPOTrainer

        from sakura_models.loading import from_pretrained

        options: PreferenceOptions = job.options
        data = job.inputs["dataset"]
        pairs = load_split(data.path, options.split, data.name)
        max_length = options.max_length or dataset_max_length(data.path)
        cuda = job.device == "cuda"
        bf16 = bool(cuda and torch.cuda.is_bf16_supported())
        beta = options.beta or DEFAULT_BETA
        config = DPOConfig(
            output_dir=str(job.work_dir / "trl"), per_device_eval_batch_size=options.batch_size, beta=beta,
            max_length=max_length, report_to="none", use_cpu=not cuda, bf16=bf16, dataloader_pin_memory=cuda,
            disable_tqdm=True, logging_strategy="no", save_strategy="no", precompute_ref_log_probs=False,
        )
        tokenizer = from_pretrained(AutoTokenizer, job.model.path, job.model.name)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        policy = from_pretrained(AutoModelForCausalLM, job.model.path, job.model.name, dtype="auto")
        reference = from_pretrained(AutoModelForCausalLM, job.inputs["reference"].path, job.inputs["reference"].name, dtype="auto")
        job.log(f"scoring {len(pairs)} pairs of {data.name}/{options.split} against {job.inputs['reference'].name}")
        trainer = DPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=pairs, eval_dataset=pairs,
                             processing_class=tokenizer)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        for printer in (PrinterCallback, ProgressCallback):  # sakura reports progress and results itself
            trainer.remove_callback(printer)
        with job.progress("preference pairs", len(pairs), "pairs") as task:
            metrics = trainer.evaluate()
            task.update(len(pairs))
        results = {METRICS[k]: float(v) for k, v in metrics.items() if k in METRICS}
        return EvalResult(
            results={"preference": results},
            settings={"dataset": data.name, "split": options.split, "pairs": len(pairs), "beta": beta,
                      "reference": job.inputs["reference"].name, "max_length": max_length,
                      "batch_size": options.batch_size, "device": job.device},
            tasks={"preference": {"name": f"held-out preference pairs ({data.name}/{options.split})", "dataset": None,
                                  "split": options.split, "num_fewshot": None}},
        )


def load_split(dataset_artifact: Any, split: str, name: str) -> Any:
    import datasets

    where = dataset_artifact / "dataset"
    if not where.is_dir():
        raise StageError(f"input {name} is not a dataset artifact (no dataset/ folder)")
    data = datasets.load_from_disk(str(where))
    if not isinstance(data, datasets.DatasetDict) or split not in data:
        has = ", ".join(data) if isinstance(data, datasets.DatasetDict) else "train"
        raise StageError(f"dataset {name} has no split {split!r} (has {has}): give its stage a test_size")
    pairs = data[split]
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in pairs.column_names]
    if missing:
        raise StageError(f"dataset {name} is not preference data (no {', '.join(missing)} column)")
    if len(pairs) == 0:
        raise StageError(f"dataset {name} split {split!r} is empty")
    return pairs


def dataset_max_length(dataset_artifact: Any) -> int | None:
    try:
        return json.loads((dataset_artifact / "stats.json").read_text())["limits"]["max_length"]
    except (OSError, ValueError, KeyError, TypeError):
        return None

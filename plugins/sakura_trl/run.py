"""The work of a ``train`` stage: the run's spec, then the training run that ties the other modules together.

Imported only when a train stage runs (torch, transformers, trl, peft, datasets are imported by the modules
it calls): ``data`` (the dataset), ``config`` (the trl config), ``model`` (tokenizer, model, LoRA),
``refcache`` (reference log-probs), ``patches`` (the trainer class), ``oom``, ``metrics`` and ``save``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError
from sakura_core.stage import InputArtifact, StageContext
from sakura_trl.checkpoints import resume_point
from sakura_trl.config import (
    build_config, caches_reference, check_max_lengths, recipe_args, resolve_args, trainer_config,
)
from sakura_trl.contract import TrainJob
from sakura_trl.data import dataset_max_length, load_splits, working_copy
from sakura_trl.metrics import SakuraCallback, thin_log
from sakura_trl.tracking import configure as configure_trackers
from sakura_trl.model import load_model, load_tokenizer, lora_config
from sakura_trl.oom import oom_guard
from sakura_trl.patches import quiet, reference_hash, trainer_class
from sakura_trl.save import save_artifact
from sakura_trl.stop import Stopped, StopOnSigterm

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Report:
    """Where a training run reports to: the stage context (``worker.WorkerReport`` under a launcher)."""

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.task: Any = None

    def start(self, description: str, total: int, unit: str = "steps") -> None:
        self.finish()
        self.task = self.ctx.progress(description, total=total, unit=unit)

    def step(self, done: int) -> None:
        if self.task is not None:
            self.task.update(min(done, self.task.total or done))

    def finish(self) -> None:
        if self.task is not None:
            self.task.__exit__(None, None, None)
            self.task = None

    def metric(self, **values: Any) -> None:
        self.ctx.metric(**values)

    def log(self, message: str) -> None:
        self.ctx.log(message)


def run_stage(ctx: StageContext) -> dict[str, Any]:
    options = ctx.options
    model_in = ctx.input(options.model)
    data_in = ctx.input(options.dataset)
    spec = {
        "trainer": options.trainer,
        "options": options.model_dump(mode="json"),
        "model_path": str(model_in.path),
        "model_fingerprint": model_in.fingerprint,
        "model_digest": content_of(model_in),
        "dataset_copy": str(working_copy(data_in.path, ctx.work_dir)),
        "dataset_fingerprint": data_in.fingerprint,
        "dataset_digest": content_of(data_in),
        "dataset_max_length": dataset_max_length(data_in.path),
        "output_dir": str(ctx.output_dir),
        "work_dir": str(ctx.work_dir),
        "store_root": str(ctx.store.root),
        "fingerprint": ctx.fingerprint,
        "recipe_path": str(ctx.recipe_path),
        "variant": ctx.variant,
        "plugin_files": [info.origin[5:] for info in ctx.plugins.infos.values() if info.origin.startswith("file ")],
    }
    if options.launcher is not None and launched(options.launcher):
        from sakura_trl.launch import run_launched

        return run_launched(ctx, spec)
    trainer = ctx.plugins.trainers.get(options.trainer)
    return train(spec, trainer, Report(ctx))


def launched(launcher: Any) -> bool:
    """Whether the stage trains under ``accelerate launch`` rather than in sakura's own process."""
    return (launcher.num_processes > 1 or bool(launcher.config_file) or (launcher.num_machines or 1) > 1
            or launcher.srun or launcher.machine_rank is not None)


def content_of(artifact: InputArtifact) -> str:
    """What an input holds, for the reference cache's key: its content digest (a forced rebuild can put other
    bytes under the same fingerprint); an artifact written before digests were recorded has only its
    fingerprint."""
    return artifact.digest or artifact.fingerprint


# -- the training run ------------------------------------------------------------------------------
def train(spec: dict[str, Any], trainer_def: Any, report: Report) -> dict[str, Any]:
    import torch

    from sakura_trl.options import TrainOptions

    options = TrainOptions.model_validate(spec["options"])
    output_dir = Path(spec["output_dir"])
    work_dir = Path(spec["work_dir"])
    tokenizer = load_tokenizer(Path(spec["model_path"]), options.chat_template, options.model)
    train_ds, eval_ds = load_splits(Path(spec["dataset_copy"]), options, trainer_def)
    cuda = torch.cuda.is_available()
    values = resolve_args(trainer_def, options, cuda=cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
                          data_max_length=spec.get("dataset_max_length"), has_eval=eval_ds is not None)
    tracking = configure_trackers(values, spec)
    args = build_config(trainer_def, values, work_dir / "checkpoints")
    wanted = options.args.get("optim")
    if wanted is not None and wanted != values["optim"]:
        report.log(f"optim {wanted} needs CUDA and bitsandbytes; using {values['optim']}, the same update")
    model = load_model(Path(spec["model_path"]), options, args)
    peft_config = lora_config(options)

    cache = None
    if caches_reference(trainer_def, options):
        from sakura_trl.refcache import RefCache

        cache = RefCache.for_run(spec, options, args, tokenizer, model)

    stop = StopOnSigterm(Path(args.output_dir))
    callback = SakuraCallback(report, args, model, lora=peft_config is not None, ref_cached=cache is not None, stop=stop)
    kwargs = dict(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
        peft_config=peft_config, callbacks=[callback],
    )
    if trainer_def.preference:
        kwargs["ref_model"] = None
    last = resume_point(Path(args.output_dir), report.log)
    if last:
        report.log(f"resuming from {Path(last).name}")
    callback.resumed_from = str(last) if last else None

    def prepare(built: Any) -> None:
        quiet(built)
        check_max_lengths(built, options)

    job = TrainJob(trainer_class=trainer_class(trainer_def, cache, report), kwargs=kwargs,
                   resume_from=str(last) if last else None, prepare=prepare)
    with stop:
        try:
            with oom_guard(options, values), reference_hash(cache):
                trainer = trainer_def.run(job)
        except KeyError as exc:  # trl reading a column the rows do not have
            raise StageError(f"dataset rows lack column {exc} that trainer {options.trainer} needs") from None
        finally:
            report.finish()
    if stop.requested and stop.step < stop.max_steps:
        raise Stopped(stop.stopped())

    metrics = callback.summary()
    if cache is not None:
        metrics.update(cache.summary())
    metrics["trainer_config"] = trainer_config(values, args)
    # The recipe's own values under the config's names: the model card marks them apart from the defaults.
    metrics["trainer_config_recipe"] = recipe_args(options)
    if tracking:
        metrics["tracking"] = tracking
    if trainer.accelerator.is_main_process:
        dtype = options.save_dtype or input_dtype(Path(spec["model_path"]))
        save_artifact(trainer, tokenizer, output_dir, peft_config is not None, dtype)
        (output_dir / "trainer_config.json").write_text(json.dumps(metrics["trainer_config"], indent=2) + "\n")
        (output_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if "tensorboard" in tracking:  # the run's event files travel with the model
            shutil.copytree(tracking["tensorboard"]["dir"], output_dir / "tensorboard")
    metrics["log"] = thin_log(metrics["log"])
    trainer.accelerator.wait_for_everyone()
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return metrics


def input_dtype(model_path: Path) -> str | None:
    """The dtype the input model's config.json gives its weights (``float16`` for the Sakura-SOLAR merge)."""
    try:
        config = json.loads((model_path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    dtype = config.get("dtype") or config.get("torch_dtype")
    return dtype if isinstance(dtype, str) else None

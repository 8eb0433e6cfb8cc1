"""The work of a ``train`` stage: trl trainer + peft LoRA, reference cache, resume, metrics, merged artifact.

Imported only when a train stage runs (torch, transformers, trl, peft, datasets are imported here).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError
from sakura_core.stage import StageContext
from sakura_trl.contract import TrainJob

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Report:
    """Where a training run reports to: the stage context (``worker.WorkerReport`` under a launcher)."""

    def __init__(self, ctx: StageContext | None = None):
        self.ctx = ctx
        self.task = None

    def start(self, description: str, total: int) -> None:
        if self.ctx is not None:
            self.task = self.ctx.progress(description, total=total, unit="steps")

    def step(self, done: int) -> None:
        if self.task is not None:
            self.task.update(done)

    def finish(self) -> None:
        if self.task is not None:
            self.task.__exit__(None, None, None)
            self.task = None

    def metric(self, **values: Any) -> None:
        if self.ctx is not None:
            self.ctx.metric(**values)

    def log(self, message: str) -> None:
        if self.ctx is not None:
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
        "dataset_path": str(data_in.path),
        "dataset_copy": str(working_copy(data_in.path, ctx.work_dir)),
        "dataset_fingerprint": data_in.fingerprint,
        "dataset_max_length": dataset_max_length(data_in.path),
        "output_dir": str(ctx.output_dir),
        "work_dir": str(ctx.work_dir),
        "store_root": str(ctx.store.root),
        "recipe_dir": str(ctx.recipe_dir),
        "plugin_files": [info.origin[5:] for info in ctx.plugins.infos.values() if info.origin.startswith("file ")],
    }
    if options.launcher is not None and (options.launcher.num_processes > 1 or options.launcher.config_file):
        from sakura_trl.launch import run_launched

        return run_launched(ctx, spec)
    trainer = ctx.plugins.trainers.get(options.trainer)
    return train(spec, trainer, Report(ctx))


# -- the training run ------------------------------------------------------------------------------
def train(spec: dict[str, Any], trainer_def: Any, report: Report, extra_callbacks: list | None = None) -> dict[str, Any]:
    import torch

    from sakura_trl.options import TrainOptions

    options = TrainOptions.model_validate(spec["options"])
    output_dir = Path(spec["output_dir"])
    work_dir = Path(spec["work_dir"])
    tokenizer = load_tokenizer(Path(spec["model_path"]), options.chat_template)
    train_ds, eval_ds = load_splits(Path(spec["dataset_copy"]), options, trainer_def)
    args = build_config(trainer_def, options, work_dir / "checkpoints", eval_ds is not None, spec.get("dataset_max_length"))
    wanted, used = options.args.get("optim"), getattr(args.optim, "value", args.optim)
    if wanted is not None and wanted != used:
        report.log(f"optim {wanted} needs CUDA and bitsandbytes; using {used}, the same update")
    tb_dir = tensorboard_dir(args, work_dir)
    model = load_model(Path(spec["model_path"]), options, args)
    peft_config = lora_config(options)

    cache = None
    if (trainer_def.preference and options.ref_cache and options.args.get("precompute_ref_log_probs", True)
            and not options.args.get("sync_ref_model")):  # a synced reference changes during training
        from sakura_trl.refcache import RefCache

        args.precompute_ref_log_probs = True
        cache = RefCache.for_run(spec, options, args, tokenizer, model)

    callback = SakuraCallback(report, args, model, lora=peft_config is not None, ref_cached=cache is not None)
    kwargs = dict(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
        peft_config=peft_config, callbacks=[callback, *(extra_callbacks or [])],
    )
    if trainer_def.preference:
        kwargs["ref_model"] = None
    last = last_checkpoint(args.output_dir)
    if last:
        report.log(f"resuming from {Path(last).name}")
    callback.resumed_from = last

    def prepare(built: Any) -> None:
        _quiet(built)
        check_max_lengths(built, options)

    job = TrainJob(trainer_class=trainer_class(trainer_def, cache), kwargs=kwargs, resume_from=last, prepare=prepare)
    try:
        with oom_guard(options), _reference_hash(cache):
            trainer = trainer_def.run(job)
    except KeyError as exc:  # trl reading a column the rows do not have
        raise StageError(f"dataset rows lack column {exc} that trainer {options.trainer} needs") from None
    finally:
        report.finish()

    metrics = callback.summary()
    if cache is not None:
        metrics.update(cache.summary())
    if trainer.accelerator.is_main_process:
        save_artifact(trainer, tokenizer, output_dir, peft_config is not None)
        (output_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if tb_dir is not None:
            shutil.copytree(tb_dir, output_dir / "tensorboard")
    metrics["log"] = _thin(metrics["log"])
    trainer.accelerator.wait_for_everyone()
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return metrics


def _thin(log: list[dict[str, Any]], keep: int = 200) -> list[dict[str, Any]]:
    """At most ``keep`` step logs in the manifest (the artifact's train_metrics.json has every step)."""
    if len(log) <= keep:
        return log
    stride = len(log) / keep
    return [log[int(i * stride)] for i in range(keep - 1)] + [log[-1]]


class _reference_hash:
    """trl hashes every reference weight to name its own datasets cache file; sakura's cache key already
    identifies the reference (the input model's fingerprint), so use it and skip a pass over the weights."""

    def __init__(self, cache: Any):
        self.cache = cache
        self.saved = None

    def __enter__(self) -> None:
        if self.cache is not None:
            import trl.trainer.dpo_trainer as dpo

            self.saved = dpo.hash_module
            dpo.hash_module = lambda module: self.cache.key

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            import trl.trainer.dpo_trainer as dpo

            dpo.hash_module = self.saved


def _quiet(trainer: Any) -> None:
    """Drop transformers' own printing callbacks: sakura shows progress and metrics itself."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def load_tokenizer(model_path: Path, chat_template: str | None) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if chat_template:
        tokenizer.chat_template = chat_template
    if not tokenizer.chat_template:
        raise StageError(
            f"model {model_path.name} has no chat template: set chat_template in the train stage "
            "(SOLAR's is in the docs)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def working_copy(dataset_artifact: Path, work_dir: Path) -> Path:
    """A copy of the dataset in the stage's work area: trl's map() writes its cache files beside the data,
    and they must never land inside another stage's artifact. The copy is shared by every process of a
    launch and survives a crash, so a resumed run reuses the tokenized rows."""
    source = dataset_artifact / "dataset"
    if not source.is_dir():
        raise StageError(f"input {dataset_artifact.name} is not a dataset artifact (no dataset/ folder)")
    target = work_dir / "dataset"
    if not target.is_dir():
        partial = work_dir / "dataset.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial)
        os.rename(partial, target)
    return target


def load_splits(where: Path, options: Any, trainer_def: Any) -> tuple[Any, Any]:
    import datasets

    data = datasets.load_from_disk(str(where))
    if not isinstance(data, datasets.DatasetDict):
        data = datasets.DatasetDict({"train": data})
    if options.train_split not in data:
        raise StageError(f"dataset {options.dataset} has no split {options.train_split!r} (has {', '.join(data)})")
    train_ds = data[options.train_split]
    _check_columns(train_ds, options, trainer_def)
    if len(train_ds) == 0:
        raise StageError(f"dataset {options.dataset} split {options.train_split!r} is empty")
    eval_ds = None
    if options.eval_split:
        if options.eval_split not in data:
            raise StageError(f"dataset {options.dataset} has no split {options.eval_split!r} (has {', '.join(data)})")
        eval_ds = data[options.eval_split]
        _check_columns(eval_ds, options, trainer_def)
    return train_ds, eval_ds


def _check_columns(ds: Any, options: Any, trainer_def: Any) -> None:
    missing = [c for c in trainer_def.columns if c not in ds.column_names]
    if missing:
        raise StageError(
            f"dataset {options.dataset} lacks column(s) {', '.join(missing)} that trainer {options.trainer} needs "
            f"(has {', '.join(ds.column_names) or 'none'})"
        )


def dataset_max_length(dataset_artifact: Path) -> int | None:
    """The token limit the dataset stage filtered its rows with (stats.json), if it had one."""
    try:
        return json.loads((dataset_artifact / "stats.json").read_text())["limits"]["max_length"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_config(trainer_def: Any, options: Any, output_dir: Path, has_eval: bool, data_max_length: int | None = None) -> Any:
    import torch

    config_cls = resolve(trainer_def.config_class)
    values = dict(trainer_def.defaults)
    # bf16 mixed precision where the hardware runs it natively; trl's default turns it on for CPU too.
    cuda = torch.cuda.is_available()
    values["bf16"] = bool(cuda and torch.cuda.is_bf16_supported())
    values["dataloader_pin_memory"] = cuda
    if cuda and _has_liger():
        values["use_liger_kernel"] = True  # liger's layer kernels: same math, less memory, faster
    if not cuda:
        values["use_cpu"] = True  # also makes accelerate run DDP on CPU (gloo) under a launcher
    if trainer_def.preference:
        # The reference pass runs without gradients: twice the training batch fits in less memory than a step.
        values["precompute_ref_batch_size"] = 2 * options.args.get("per_device_train_batch_size", 8)
    if data_max_length:
        # The rows were filtered to this many tokens: the trainer must not cut them shorter (trl's default is
        # 1024, and the Sakura-SOLAR scripts silently trained on 512). args.max_length still wins.
        values["max_length"] = data_max_length
    values.update(options.args)
    # transformers 5 renamed gradient_checkpointing*; a recipe may use either name.
    for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                     ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
        if old in options.args and new not in options.args:
            values[new] = values.pop(old)
    if "optim" in values:
        values["optim"] = portable_optimizer(values["optim"], cuda)
    values["output_dir"] = str(output_dir)
    if not has_eval:
        values.setdefault("eval_strategy", "no")
    elif "eval_strategy" not in options.args:
        values["eval_strategy"] = "epoch"  # an eval_split is named to be evaluated (trl's default never does)
    try:
        return config_cls(**values)
    except (ValueError, TypeError) as exc:
        raise StageError(f"invalid trainer args: {str(exc).splitlines()[0]}") from None


# bitsandbytes' paged optimizers keep the same 32-bit AdamW state as torch's, only paged out to CPU memory
# under GPU pressure; without CUDA (or without bitsandbytes) the torch optimizer performs the same update, so a
# recipe written for a GPU (Sakura-SOLAR's paged_adamw_32bit) still runs as written on a CPU machine.
UNPAGED = {"paged_adamw_32bit": "adamw_torch", "paged_adamw": "adamw_torch"}


def portable_optimizer(optim: Any, cuda: bool) -> Any:
    """``optim`` as given, or its unpaged equivalent when bitsandbytes cannot run it here."""
    if optim not in UNPAGED:
        return optim
    import importlib.util

    if cuda and importlib.util.find_spec("bitsandbytes") is not None:
        return optim
    return UNPAGED[optim]


def _has_liger() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def tensorboard_dir(args: Any, work_dir: Path) -> Path | None:
    """With ``report_to = ["tensorboard"]`` the event files are written to the work area (they survive a
    resume) and copied into the artifact's ``tensorboard/`` at the end."""
    report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
    if "tensorboard" not in report_to and "all" not in report_to:
        return None
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        raise StageError('args.report_to asks for tensorboard, which is not installed (pip install tensorboard)')
    where = work_dir / "tensorboard"
    where.mkdir(parents=True, exist_ok=True)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(where)
    return where


def load_model(model_path: Path, options: Any, args: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    init = dict(args.model_init_kwargs or {}) if isinstance(args.model_init_kwargs, dict) else {}
    init.setdefault("dtype", "auto")
    if options.lora is not None and options.lora.quantize == "4bit":
        if not torch.cuda.is_available():
            raise StageError("lora.quantize = \"4bit\" (QLoRA) needs a CUDA GPU; remove it to train LoRA in full precision")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise StageError("lora.quantize = \"4bit\" needs the bitsandbytes package (pip install bitsandbytes)") from None
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if args.bf16 else torch.float16
        init["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
        )
        init["dtype"] = compute
    model = AutoModelForCausalLM.from_pretrained(model_path, **init)
    if not torch.cuda.is_available() and model.dtype == torch.float16:
        model = model.float()  # fp16 kernels on CPU are slow or missing
    if options.lora is not None and options.lora.quantize == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(args.activation_checkpointing))
    return model


def lora_config(options: Any) -> Any:
    if options.lora is None:
        return None
    from peft import LoraConfig

    lora = options.lora
    return LoraConfig(
        task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, bias=lora.bias,
    )


def resolve(name: str) -> Any:
    """``"DPOTrainer"`` (an attribute of trl) or ``"package.module:Class"`` (a third-party trainer)."""
    import importlib

    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    import trl

    return getattr(trl, name)


def trainer_class(trainer_def: Any, cache: Any) -> type:
    base = resolve(trainer_def.trainer_class)

    class SakuraTrainer(base):  # type: ignore[misc, valid-type]
        """trl's trainer, plus: one clear line for unusable data, the reference cache (DPO), LoRA on lm_head."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            from sakura_trl.lora_head import lora_head_allowed, route_head_through_adapter

            with lora_head_allowed(base):
                super().__init__(*args, **kwargs)
            route_head_through_adapter(self.model)

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, *rest: Any, **kwargs: Any) -> Any:
            out = super()._prepare_dataset(dataset, processing_class, args, *rest, **kwargs)
            if hasattr(out, "__len__") and len(out) == 0 and len(dataset) > 0:
                raise StageError(
                    f"every row was dropped while tokenizing: the prompts are longer than args.max_length "
                    f"({args.max_length}); raise max_length or shorten the prompts"
                )
            return out

        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            if cache is None:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            found = cache.load(name, dataset)
            if found is not None:
                return found
            started = time.perf_counter()
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            cache.ref_seconds += time.perf_counter() - started
            cache.save(name, out)
            return out

    return SakuraTrainer


def check_max_lengths(trainer: Any, options: Any) -> None:
    """The max lengths a recipe sets must be the ones the trainer uses (the Sakura scripts lost them)."""
    for key in ("max_length", "max_prompt_length", "max_completion_length"):
        if key in options.args and getattr(trainer.args, key, None) != options.args[key]:
            raise StageError(f"args.{key} = {options.args[key]} did not reach the trainer")


def last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not os.path.isdir(output_dir):
        return None
    return get_last_checkpoint(output_dir)


class oom_guard:
    """Turns CUDA out-of-memory into one line that says which settings to change."""

    def __init__(self, options: Any):
        self.options = options

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc is None:
            return False
        import torch

        if isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc)):
            args = self.options.args
            hints = [f"lower args.per_device_train_batch_size (now {args.get('per_device_train_batch_size', 8)}) "
                     "and raise gradient_accumulation_steps"]
            if not (args.get("activation_checkpointing") or args.get("gradient_checkpointing")):
                hints.append("set args.activation_checkpointing = true")
            if self.options.lora is None:
                hints.append("train a LoRA adapter (lora = { r = 16 })")
            elif self.options.lora.quantize is None:
                hints.append('load the base in 4 bit (lora.quantize = "4bit")')
            hints.append(f"lower args.max_length (now {args.get('max_length', 1024)})")
            raise StageError("out of GPU memory: " + "; ".join(hints)) from None
        return False


def save_artifact(trainer: Any, tokenizer: Any, output_dir: Path, lora: bool) -> None:
    """A complete model (LoRA merged) in safetensors shards with tokenizer + chat template; adapter beside it."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if lora:
        model.save_pretrained(output_dir / "adapter", safe_serialization=True)
        tokenizer.save_pretrained(output_dir / "adapter")
        model = model.merge_and_unload()
    _strip_trl_patches(model)
    model.save_pretrained(output_dir, safe_serialization=True, max_shard_size="2GB")
    tokenizer.save_pretrained(output_dir)
    for junk in ("README.md", "training_args.bin"):
        path = output_dir / junk
        if path.exists():
            path.unlink()


def _strip_trl_patches(model: Any) -> None:
    """trl tags the config with its own fields; keep the saved config a plain transformers one."""
    for name in ("use_cache",):
        if hasattr(model.config, name):
            model.config.use_cache = True


# -- metrics ---------------------------------------------------------------------------------------
def peak_flops(seconds: float = 0.2) -> tuple[float, str]:
    """Peak dense FLOP/s of the device: a table for known GPUs, a measured matmul for the CPU."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        table = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12,
                 "4090": 165e12, "3090": 71e12, "V100": 125e12}
        for key, value in table.items():
            if key in name:
                return value, f"{name} bf16 dense peak"
        return 0.0, name
    n = 512
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start, reps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start), "CPU fp32 matmul measured"


def peak_memory_gib() -> tuple[float, str]:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"


def _make_callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class SakuraCallback(_make_callback_base()):  # type: ignore[misc]
    """Progress bar, live metrics and the summary the stage returns."""

    def __init__(self, report: Report, args: Any, model: Any, lora: bool, ref_cached: bool):
        self.report = report
        self.n_params = sum(p.numel() for p in model.parameters())
        self.lora = lora
        self.ref_cached = ref_cached
        self.logs: list[dict[str, Any]] = []
        self.start_time = 0.0
        self.end_time = 0.0
        self.start_step = 0
        self.steps = 0
        self.resumed_from: str | None = None
        self.flops_peak, self.flops_source = peak_flops()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.report.start("training", state.max_steps)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.start_time:  # the first step after a (re)start; checkpoint loading is not training time
            self.start_time = time.perf_counter()
            self.start_step = state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps = state.global_step
        self.report.step(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.end_time = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        self.logs.append({"step": state.global_step, **logs})
        live = {"loss": logs.get("loss")}
        if "rewards/accuracies" in logs:
            live["reward_acc"] = logs["rewards/accuracies"]
            live["margin"] = logs.get("rewards/margins")
        rate = self._throughput()
        if rate:
            live["tokens/s"] = round(rate["tokens_per_s"], 1)
        self.report.metric(**{k: v for k, v in live.items() if v is not None})

    def _throughput(self) -> dict[str, float]:
        if not self.logs or not self.start_time:
            return {}
        seconds = (self.end_time or time.perf_counter()) - self.start_time
        tokens = self.logs[-1].get("num_tokens", 0.0)
        if not seconds or not tokens:
            return {}
        return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": self.steps}
        if self.logs:
            last = self.logs[-1]
            out["loss"] = last.get("loss")
            out["first_loss"] = self.logs[0].get("loss")
            for src, dst in (("rewards/accuracies", "reward_accuracy"), ("rewards/margins", "reward_margin"),
                             ("rewards/chosen", "reward_chosen"), ("rewards/rejected", "reward_rejected")):
                if src in last:
                    out[dst] = last[src]
        rate = self._throughput()
        if rate:
            steps = max(1, self.steps - self.start_step)
            out["train_seconds"] = round(rate["seconds"], 3)
            out["tokens"] = int(rate["tokens"])
            out["tokens_per_s"] = round(rate["tokens_per_s"], 2)
            out["steps_per_s"] = round(steps / rate["seconds"], 4)
            # FLOPs per token: forward 2N, backward 4N (full) or ~2N (LoRA: no weight gradients of the base),
            # plus a 2N reference forward when the reference is not cached.
            per_token = 2 + (2 if self.lora else 4) + (0 if self.ref_cached else 2)
            if self.flops_peak:
                out["mfu"] = round(per_token * self.n_params * rate["tokens_per_s"] / self.flops_peak, 4)
                out["mfu_peak_source"] = self.flops_source
        mem, source = peak_memory_gib()
        out["peak_memory_gib"] = round(mem, 3)
        out["peak_memory_source"] = source
        out["params"] = self.n_params
        if self.resumed_from:
            out["resumed_from_step"] = int(Path(self.resumed_from).name.split("-")[-1])
        out["log"] = self.logs
        return out

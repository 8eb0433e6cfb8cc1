"""The ``train`` stage kind: checks a recipe's train table without importing torch or trl."""

from __future__ import annotations

import re
from typing import Any

from sakura_core.errors import OptionError, PluginError
from sakura_core.stage import CheckEnv, StageContext, StageKind

from sakura_trl.options import TrainOptions


class TrainStage(StageKind):
    Options = TrainOptions
    produces = "model"
    libraries = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")

    def references(self, options: TrainOptions) -> dict[str, str]:
        return {"model": options.model, "dataset": options.dataset}

    def gpus(self, options: TrainOptions) -> int:
        """One per process ``accelerate launch`` starts on this node (``launcher.num_processes`` over its
        machines), else one."""
        launcher = options.launcher
        return 1 if launcher is None else max(1, launcher.num_processes // (launcher.num_machines or 1))

    def check(self, options: TrainOptions, env: CheckEnv) -> None:
        try:
            trainer = env.plugins.trainers.get(options.trainer)
        except PluginError as exc:
            raise OptionError("trainer", str(exc)) from None
        trainer.check(options.args, env)
        from sakura_trl.tracking import check_installed

        check_installed(options.args.get("report_to"))
        if options.launcher and options.launcher.config_file:
            path = env.recipe_dir / options.launcher.config_file
            if not path.is_file():
                raise OptionError("launcher.config_file", f"file not found: {path}")
        if options.launcher:
            check_launcher(options.launcher)

    def external_inputs(self, options: TrainOptions, env: CheckEnv) -> dict[str, Any]:
        if options.launcher and options.launcher.config_file:
            from sakura_core.hashing import hash_path

            return {"launcher_config": hash_path(env.recipe_dir / options.launcher.config_file)}
        return {}

    def uses(self, options: TrainOptions) -> list[tuple[str, str]]:
        return [("trainers", options.trainer)]

    def estimate(self, options: TrainOptions, inputs: dict[str, dict[str, Any]], env: CheckEnv) -> Any:
        """GPU memory of a step at the recipe's micro batch and max_length (on one CUDA GPU with bf16: the
        configuration ``resolve_args`` gives such a run), and the artifact: the whole model, the adapter and
        the checkpoints."""
        from sakura_core.estimate import dtype_bytes, dtype_of
        from sakura_models.shapes import model_bytes
        from sakura_trl.config import TRL_BATCH_SIZE, TRL_MAX_LENGTH, resolve_args
        from sakura_trl.estimate import TrainSetup, train_estimate

        config = inputs.get(options.model, {}).get("config")
        if not isinstance(config, dict):
            return None
        trainer = env.plugins.trainers.get(options.trainer)
        data_max = inputs.get(options.dataset, {}).get("max_length")
        data_max = data_max if isinstance(data_max, int) else None
        # plan sizes a GPU run: the configuration such a run gets
        args = resolve_args(trainer, options, cuda=True, data_max_length=data_max,
                            has_eval=options.eval_split is not None)
        max_length = args.get("max_length", TRL_MAX_LENGTH) or config.get("max_position_embeddings") or TRL_MAX_LENGTH
        if data_max is not None:  # the dataset stage dropped longer rows
            max_length = min(max_length, data_max)
        batch = args.get("per_device_train_batch_size", TRL_BATCH_SIZE)
        reference = "none"
        if trainer.preference:
            live = "in-step" if options.lora else "model"  # with LoRA the reference is the policy, adapter off
            reference = "precompute" if args.get("precompute_ref_log_probs") else live
        compute = "float16" if args.get("fp16") else (None if args.get("bf16") is False else "bfloat16")
        lora = options.lora
        setup = TrainSetup(
            micro_batch=batch,
            max_length=max_length,
            preference=trainer.preference,
            lora_r=lora.r if lora else None,
            lora_targets=lora.target_modules if lora else "all-linear",
            lora_bias=lora.bias if lora else "none",
            quantize_4bit=bool(lora and lora.quantize == "4bit"),
            compute_dtype=compute,
            checkpointing=bool(args.get("activation_checkpointing")),
            eight_bit_optimizer="8bit" in str(args.get("optim", "")),
            reference=reference,
            reference_batch=args.get("precompute_ref_batch_size") or 2 * batch,
            fused_head=_fused_lm_head(),
        )
        estimate = train_estimate(config, setup)
        if estimate is None:
            return None
        size = model_bytes(config) or 0
        estimate.disk["model"] = size  # the adapter merged in, in the weights' dtype
        trainable = estimate.output["trainable_params"]
        if lora:
            estimate.disk["adapter"] = trainable * 4
        if args.get("save_strategy", "steps") != "no":
            # each checkpoint: the trained weights and AdamW's two moments (fp32 for an adapter)
            each = trainable * 12 if lora else size + trainable * 2 * dtype_bytes(dtype_of(config), 4)
            estimate.disk["checkpoints"] = each * (args.get("save_total_limit") or 1)
        if options.launcher and options.launcher.config_file:
            estimate.notes.append("per process, as if unsharded: DeepSpeed ZeRO / FSDP in the launcher config use less")
        return estimate

    def headline(self, metrics: dict[str, Any]) -> dict[str, tuple[float, bool]]:
        """The final training metrics: loss (lower is better), DPO's reward accuracy and margin (higher), and the
        eval split's when one was evaluated."""
        wanted = {"loss": False, "reward_accuracy": True, "reward_margin": True, "eval_loss": False,
                  "eval_reward_accuracy": True, "eval_reward_margin": True}
        return {name: (float(metrics[name]), higher) for name, higher in wanted.items()
                if isinstance(metrics.get(name), (int, float)) and not isinstance(metrics.get(name), bool)}

    def curves(self, artifact: Any, metrics: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
        """Loss and reward margin per optimizer step, from the artifact's train_metrics.json (every step)."""
        import json
        from pathlib import Path

        try:
            log = json.loads((Path(artifact) / "train_metrics.json").read_text()).get("log") or []
        except (OSError, ValueError):
            log = metrics.get("log") or []
        series: dict[str, list[tuple[float, float]]] = {}
        for name, key in (("loss", "loss"), ("reward margin", "rewards/margins")):
            points = [(float(e["step"]), float(e[key])) for e in log if isinstance(e, dict) and isinstance(e.get(key), (int, float))]
            if points:
                series[name] = points
        return series

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from sakura_trl.run import run_stage

        return run_stage(ctx)


def _fused_lm_head() -> bool:
    """Whether the installed trl scores log-probs in tiles without materializing the logits (its
    ``kernels/chunked_logprob.py``), found without importing trl."""
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("trl")
    except (ImportError, ValueError):
        return False
    return bool(spec and spec.origin and (Path(spec.origin).parent / "kernels" / "chunked_logprob.py").is_file())


def check_launcher(launcher: Any) -> None:
    """The multi-node keys must make one launch: what accelerate would only notice once every machine waits
    on the others is a one-line error here. A config file may hold any of them, so without one the recipe
    must say them all."""
    machines, rank, config = launcher.num_machines, launcher.machine_rank, launcher.config_file
    ip = launcher.main_process_ip
    if ip is not None and not re.fullmatch(r"[A-Za-z0-9_.:%\[\]-]+", ip):
        raise OptionError("launcher.main_process_ip", f"must be a host name or an IP address (got {ip!r})")
    if launcher.srun and rank is not None:
        raise OptionError("launcher.machine_rank", "set by srun (each node's $SLURM_NODEID): leave it unset with srun = true")
    if launcher.srun and machines == 1:
        raise OptionError("launcher.srun", "srun starts one launcher per machine: set num_machines > 1 (or leave srun unset)")
    if launcher.srun and machines is None and not config:
        raise OptionError("launcher.srun", "srun needs num_machines (or a config_file holding it)")
    if rank is not None and machines is not None and rank >= machines:
        raise OptionError("launcher.machine_rank", f"must be below num_machines ({machines}), got {rank}")
    if rank is not None and machines is None and not config:
        raise OptionError("launcher.machine_rank", "needs num_machines (or a config_file holding it)")
    if machines is not None and machines > 1 and not config:
        if not launcher.main_process_ip:
            raise OptionError("launcher.main_process_ip", f"num_machines = {machines} needs the address of machine 0 "
                              "(main_process_ip) or a config_file holding it")
        if rank is None and not launcher.srun:
            raise OptionError("launcher.machine_rank", f"num_machines = {machines} needs this machine's rank "
                              "(machine_rank) or srun = true to start every node")
    explicit = "num_processes" in launcher.model_fields_set or not config
    if machines is not None and explicit and (launcher.num_processes < machines or launcher.num_processes % machines):
        raise OptionError("launcher.num_processes", f"is the total over all machines: a multiple of num_machines "
                          f"({machines}), got {launcher.num_processes}")

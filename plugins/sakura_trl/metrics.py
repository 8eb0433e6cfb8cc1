"""What a training run measures: progress, live metrics, the summary (throughput, MFU, peak memory).

Imported only when a train stage runs (it imports transformers).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback


if TYPE_CHECKING:  # pragma: no cover
    from sakura_trl.run import Report
    from sakura_trl.stop import StopOnSigterm


def thin_log(log: list[dict[str, Any]], keep: int = 200) -> list[dict[str, Any]]:
    """At most ``keep`` step logs in the manifest (the artifact's train_metrics.json has every step)."""
    if len(log) <= keep:
        return log
    stride = len(log) / keep
    return [log[int(i * stride)] for i in range(keep - 1)] + [log[-1]]


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


class SakuraCallback(TrainerCallback):
    """Progress bar, live metrics and the summary the stage returns."""

    def __init__(self, report: Report, args: Any, model: Any, lora: bool, ref_cached: bool, stop: StopOnSigterm):
        self.report = report
        self.stop = stop
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
        self.stop.step, self.stop.max_steps, self.stop.training = state.global_step, state.max_steps, True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps = state.global_step
        self.stop.step = state.global_step
        self.report.step(state.global_step)
        if self.stop.requested:  # SIGTERM during this step: checkpoint it, then stop
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.end_time = time.perf_counter()
        self.stop.training = False

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

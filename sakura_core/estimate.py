"""Disk and memory estimates for ``sakura plan``, from the models' ``config.json`` alone (never weights).

Pure functions over config dicts (no torch, no I/O) plus the walk over a plan that asks each model source
for its config and each stage kind for its ``estimate``. Sizes are bytes; the plan prints them in GB (1e9).

Generic pieces only: a model's shape is its model source's plugin's to know (``ModelSource.footprint``;
the built-in sources use ``sakura_models.shapes``), a stage's memory its stage kind's (``StageKind.estimate``;
training memory is ``sakura_trl.estimate``). Memory is what PyTorch allocates on one device
(``torch.cuda.max_memory_allocated``), without the CUDA context (~0.5-1 GB) and allocator fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sakura_core.plan import Plan
    from sakura_core.stage import SourceEnv

GB = 1e9
# What a stage's time estimate assumes: H100-class compute and memory bandwidth, at typical efficiency.
TIME_BASIS = "H100-class GPU"
GPU_FLOPS = 989e12 * 0.35  # bf16 dense peak at 35% utilization (batched forward passes)
GPU_BYTES_PER_S = 3.35e12 * 0.6  # HBM bandwidth at 60% (token-by-token generation reads every weight per step)

DTYPE_BYTES = {
    "float64": 8, "double": 8, "float32": 4, "float": 4, "fp32": 4, "float16": 2, "half": 2, "fp16": 2,
    "bfloat16": 2, "bf16": 2, "int8": 1, "uint8": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
}


@dataclass
class Estimate:
    """What a stage will take: bytes written to disk, peak memory on its compute device, by part.

    ``output`` is what downstream stages may read about this stage's output: ``config`` (a model's
    config.json as a dict) for stages that produce a model, ``max_length`` for datasets.
    """

    disk: dict[str, int] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)  # parts of the peak phase
    device: str = "gpu"  # where ``memory`` lives: "gpu" or "cpu"
    phases: dict[str, int] = field(default_factory=dict)  # total memory of each phase, when there are several
    upload: int | None = None  # bytes sent elsewhere (a Hub upload)
    seconds: float | None = None  # rough wall time on one TIME_BASIS GPU (None: not estimated)
    notes: list[str] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)

    @property
    def disk_bytes(self) -> int | None:
        return sum(self.disk.values()) if self.disk else None

    @property
    def memory_bytes(self) -> int | None:
        return sum(self.memory.values()) if self.memory else None

    def as_json(self) -> dict[str, Any]:
        return {
            "disk_bytes": self.disk_bytes,
            "disk": dict(self.disk),
            "memory_bytes": self.memory_bytes,
            "memory_device": self.device if self.memory else None,
            "memory": dict(self.memory),
            **({"phases": dict(self.phases)} if self.phases else {}),
            **({"upload_bytes": self.upload} if self.upload is not None else {}),
            **({"seconds": round(self.seconds)} if self.seconds is not None else {}),
            "notes": list(self.notes),
        }


# -- configs ----------------------------------------------------------------------------------------
def dtype_of(config: dict[str, Any] | None) -> str | None:
    """The weights' dtype a config declares (``dtype``, or ``torch_dtype`` before transformers 5)."""
    if not config:
        return None
    value = config.get("dtype") or config.get("torch_dtype")
    return value if isinstance(value, str) and value in DTYPE_BYTES else None


def dtype_bytes(dtype: str | None, default: int = 4) -> int:
    return DTYPE_BYTES.get(dtype or "", default)


# -- the plan -----------------------------------------------------------------------------------------
@dataclass
class PlanEstimates:
    models: dict[str, dict[str, Any] | None]  # alias -> {"source", "params", "bytes", "dtype"} or None
    stages: dict[str, Estimate | None]


def estimate_plan(plan: Plan, env: SourceEnv) -> PlanEstimates:
    """Ask each model source for its config and footprint, and each stage kind for its estimate, in execution
    order.

    Nothing here may fail the plan: an error or an unknown architecture is no estimate.
    """
    from sakura_core.stage import CheckEnv

    recipe = plan.recipe
    outputs: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, Any] | None] = {}
    for alias, node in plan.sources.items():
        source = node.model.source
        try:
            config = source.config(node.model.options, env, node.fingerprint)
        except Exception:  # noqa: BLE001 - an estimate is never an error
            config = None
        outputs[alias] = {"config": config} if isinstance(config, dict) else {}
        try:
            footprint = source.footprint(config) if isinstance(config, dict) else None
        except Exception:  # noqa: BLE001
            footprint = None
        models[alias] = (
            {"source": node.model.source_name, "params": footprint["params"], "bytes": footprint.get("bytes"),
             "dtype": dtype_of(config)}
            if isinstance(footprint, dict) and isinstance(footprint.get("params"), int) else None
        )
    check_env = CheckEnv(plugins=recipe.plugins, recipe_dir=recipe.path.parent, names={*recipe.models, *recipe.stages})
    stages: dict[str, Estimate | None] = {}
    for name, node in plan.stages.items():
        stage = node.stage
        inputs = {ref: outputs.get(ref, {}) for ref in stage.depends_on}
        try:
            estimate = stage.kind.estimate(stage.options, inputs, check_env)
        except Exception:  # noqa: BLE001
            estimate = None
        stages[name] = estimate
        outputs[name] = estimate.output if estimate is not None else {}
    return PlanEstimates(models, stages)


# -- the local GPU ------------------------------------------------------------------------------------
def local_gpu() -> dict[str, Any] | None:
    """``{"name", "total_bytes", "free_bytes"}`` of this machine's first CUDA GPU, or None.

    Through torch only when the process has already imported it; otherwise through ``nvidia-smi`` when it
    is on PATH (a machine without it has no usable NVIDIA GPU): ``sakura plan`` does not import torch.
    """
    import os
    import shutil
    import subprocess
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if not torch.cuda.is_available():
                return None
            free, total = torch.cuda.mem_get_info()
            return {"name": torch.cuda.get_device_name(), "total_bytes": int(total), "free_bytes": int(free)}
        except Exception:  # noqa: BLE001
            return None
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1") or not shutil.which("nvidia-smi"):
        return None
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5,
        )
        rows = [line.rsplit(",", 2) for line in done.stdout.strip().splitlines() if line.count(",") >= 2]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        row = rows[int(visible)] if visible.isdigit() and int(visible) < len(rows) else rows[0]
        return {"name": row[0].strip(), "total_bytes": int(float(row[1])) * 2**20, "free_bytes": int(float(row[2])) * 2**20}
    except Exception:  # noqa: BLE001 - no answer, no verdict
        return None


def fits(needed: int, gpu: dict[str, Any]) -> bool:
    """Room for ``needed`` bytes on the GPU, keeping 5% for the CUDA context and fragmentation."""
    return needed <= 0.95 * gpu["total_bytes"]


# -- formatting ---------------------------------------------------------------------------------------
UNITS = ((GB, "GB"), (1e6, "MB"), (1e3, "kB"))


def _unit(n: int) -> tuple[float, str]:
    return next(((size, name) for size, name in UNITS if n >= 0.95 * size), UNITS[-1])


def human(n: int | None) -> str:
    """``21.5 GB``, ``854 MB``, ``12 kB``; ``-`` for no value."""
    if n is None:
        return "-"
    size, name = _unit(n)
    return f"{n / size:.1f} {name}" if name == "GB" else f"{n / size:.0f} {name}"


def count(n: int) -> str:
    """A parameter count: ``10.73B``, ``62.9M``, ``213.6K``."""
    for size, name in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= 0.95 * size:
            return f"{n / size:.2f}{name}" if name == "B" else f"{n / size:.1f}{name}"
    return str(n)


def _parts(parts: dict[str, int], total: int) -> str:
    """A breakdown in the unit of its total, without the unit: ``weights 21.5, activations 14.0``."""
    size, name = _unit(total)
    digits = 1 if name == "GB" else 0
    return ", ".join(f"{k} {v / size:.{digits}f}" for k, v in parts.items())


def describe(name: str, estimate: Estimate) -> str | None:
    """One line: ``dpo: GPU ~39.4 GB (weights 21.5, LoRA+Adam 1.0, ...) · disk 22.3 GB (...)``."""
    parts = []
    if estimate.memory:
        total = estimate.memory_bytes or 0
        label = "GPU" if estimate.device == "gpu" else "CPU memory"
        text = f"{label} ~{human(total)} ({_parts(estimate.memory, total)})"
        if len(estimate.phases) > 1:
            text += "; " + ", ".join(f"{k} {human(v)}" for k, v in estimate.phases.items())
        parts.append(text)
    if estimate.disk:
        total = estimate.disk_bytes or 0
        detail = _parts(estimate.disk, total) if len(estimate.disk) > 1 else next(iter(estimate.disk))
        parts.append(f"disk {human(total)} ({detail})")
    if estimate.upload is not None:
        parts.append(f"upload {human(estimate.upload)}")
    if estimate.seconds is not None:
        parts.append(f"time ~{duration(estimate.seconds)} (rough, on one {TIME_BASIS})")
    return f"{name}: " + " · ".join(parts) if parts else None


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.4 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

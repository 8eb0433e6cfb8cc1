"""Disk and memory estimates for ``sakura plan``, from the models' ``config.json`` alone (never weights).

Pure functions over config dicts (no torch, no I/O) plus the walk over a plan that asks each model source
for its config and each stage kind for its ``estimate``. Sizes are bytes; the plan prints them in GB (1e9).

What is modelled (and so what is not): Llama-style decoders (``llama``, ``mistral``, ``qwen2``, ``qwen3``:
embeddings, GQA attention, gated MLP, RMSNorms, an LM head unless tied). Any other architecture, or a
missing config, has no estimate rather than a wrong one. Memory is what PyTorch allocates on one device
(``torch.cuda.max_memory_allocated``), without the CUDA context (~0.5-1 GB) and allocator fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from sakura_core.plan import Plan
    from sakura_core.stage import SourceEnv

GB = 1e9
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
LAYER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

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


@dataclass(frozen=True)
class Shape:
    """A Llama-style decoder's dimensions, read from its config."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool

    @property
    def q_out(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_out(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """``{name: (in features, out features)}`` of one decoder layer's linear layers."""
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, self.q_out), "k_proj": (h, self.kv_out), "v_proj": (h, self.kv_out), "o_proj": (self.q_out, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
        }

    def biases(self) -> dict[str, int]:
        """``{name: bias size}`` of one decoder layer's linear layers that have a bias."""
        out: dict[str, int] = {}
        for name, (_, n_out) in self.linears().items():
            if (name in ("q_proj", "k_proj", "v_proj") and self.qkv_bias) or (name == "o_proj" and self.o_bias) or (
                name in ("gate_proj", "up_proj", "down_proj") and self.mlp_bias
            ):
                out[name] = n_out
        return out


def shape_of(config: dict[str, Any] | None) -> Shape | None:
    """The decoder's shape, or None for an architecture these formulas do not describe."""
    if not isinstance(config, dict) or config.get("model_type") not in ARCHITECTURES:
        return None
    try:
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
        model_type = config["model_type"]
        bias = bool(config.get("attention_bias", False))
        return Shape(
            vocab=int(config["vocab_size"]),
            hidden=hidden,
            intermediate=int(config["intermediate_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            # Llama, Mistral and Qwen configs default to untied embeddings.
            tied=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=bias or model_type == "qwen2",  # Qwen2's q, k and v projections always have a bias
            o_bias=bias and model_type in ("llama", "qwen3"),
            mlp_bias=bool(config.get("mlp_bias", False)) and model_type == "llama",
            qk_norm=model_type == "qwen3",
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def layer_params(shape: Shape) -> int:
    """One decoder layer: attention (GQA) and MLP weights and biases, two RMSNorms (and Qwen3's q/k norms)."""
    weights = sum(n_in * n_out for n_in, n_out in shape.linears().values())
    norms = 2 * shape.hidden + (2 * shape.head_dim if shape.qk_norm else 0)
    return weights + sum(shape.biases().values()) + norms


def param_count(config: dict[str, Any] | None) -> int | None:
    """Every parameter: embeddings, the decoder layers, the final norm and the LM head unless tied."""
    shape = shape_of(config)
    if shape is None:
        return None
    embeddings = shape.vocab * shape.hidden
    head = 0 if shape.tied else shape.vocab * shape.hidden
    return embeddings + shape.layers * layer_params(shape) + shape.hidden + head


def model_bytes(config: dict[str, Any] | None) -> int | None:
    """Size of the weights in safetensors, in the config's dtype."""
    params = param_count(config)
    return None if params is None else params * dtype_bytes(dtype_of(config), 4)


def _targeted(name: str, targets: Iterable[str] | str) -> bool:
    """peft's rule for a list of names: the module's name is one of them, or ends with ``.<name>``."""
    if targets == "all-linear":  # every linear layer but the output layer
        return name in LAYER_LINEARS
    return name in {target.rsplit(".", 1)[-1] for target in targets}  # "self_attn.q_proj" names q_proj too


def lora_params(config: dict[str, Any] | None, r: int, targets: Iterable[str] | str, bias: str = "none") -> int | None:
    """Trainable parameters of a LoRA adapter (what peft's ``get_nb_trainable_parameters`` counts).

    A linear layer ``in -> out`` gets ``A: r x in`` and ``B: out x r``; ``embed_tokens`` gets ``r x vocab`` and
    ``hidden x r``; ``lm_head`` is a linear ``hidden -> vocab``. ``bias = "all"`` also trains every bias,
    ``"lora_only"`` the biases of the targeted layers.
    """
    shape = shape_of(config)
    if shape is None:
        return None
    targets = targets if targets == "all-linear" else list(targets)
    total = 0
    biases = shape.biases()
    for name, (n_in, n_out) in shape.linears().items():
        if _targeted(name, targets):
            total += shape.layers * r * (n_in + n_out)
            if bias == "lora_only":
                total += shape.layers * biases.get(name, 0)
    if bias == "all":
        total += shape.layers * sum(biases.values())
    if targets != "all-linear":
        if _targeted("embed_tokens", targets):
            total += r * (shape.vocab + shape.hidden)
        if _targeted("lm_head", targets):
            total += r * (shape.hidden + shape.vocab)
    return total


# -- training memory ----------------------------------------------------------------------------------
# Activations: what autograd keeps for the backward pass, per token and per decoder layer, in bytes. With a
# = bytes of the compute dtype (2 under bf16/fp16 autocast), h = hidden, i = intermediate, q = heads x
# head_dim, kv = kv_heads x head_dim, n = heads, r = LoRA rank:
#
#   2 RMSNorms          2 (4h + 4)          the fp32 copy of the input and the rsqrt
#   attention (SDPA)    a (2q + 2kv) + 4n   q, k, v, the output and the logsumexp (flash / memory-efficient
#                                           kernels: no seq x seq matrix)
#   gated MLP           3 a i               gate output (SiLU), SiLU output and up output (the product)
#   each trained linear a in + a r          its input (under autocast each linear casts its own copy) and,
#                                           with LoRA, A's output; full fine-tuning: every linear, plus the
#                                           two norm outputs (2 a h) for the norm weights' gradients
#
# Measured with torch.autograd.graph.saved_tensors_hooks on a Llama with LoRA on all seven projections
# under bf16 autocast, this is exact (tests/test_estimate.py checks it). Under autocast, weights stored in
# another dtype than the compute dtype (fp16 or fp32 weights, bf16 compute) are cast once per linear and
# per forward, and the cast copy is kept for the backward pass: 2 bytes per weight of every layer whose
# activations are kept ("autocast weight copies"). Mixed fp16 weights and bf16 compute also make the
# residual stream float32 (fp16 + bf16 promotes), which is what gradient checkpointing keeps per layer.
#
# Padded batches (DPO's chosen and rejected always differ in length) give attention a mask: transformers
# then repeats k and v to every head (2q instead of 2kv), and SDPA converts the boolean mask to the compute
# dtype in every layer and keeps it: a x seq_len more per token (sequences x seq_len^2 per layer).
#
# With gradient checkpointing each layer keeps only its input (s h per token, s = residual stream bytes),
# and the backward pass recomputes one layer at a time: L s h + one layer's activations (and weight copies).
#
# DPO runs chosen and rejected in one batch: tokens = 2 x micro batch x max_length (padded lengths; the
# worst case). The LM head: trl's fused LM head (trl/kernels/chunked_logprob.py, in trl 1.16) scores
# 4096-token x 32768-vocab tiles and never materializes the logits; without it, logits are tokens x vocab x (a + 4 + 4): the logits, their fp32
# upcast for the log-softmax and its gradient.
TOKEN_TILE, VOCAB_TILE = 4096, 32768


def layer_activation_bytes(shape: Shape, compute: int, lora_targets: Iterable[str] | None, r: int = 0,
                           padded_length: int | None = None) -> int:
    """Bytes kept for the backward pass per token and per decoder layer (see the formula above).

    ``lora_targets``: the layer's linear names that carry a LoRA adapter; None means full fine-tuning.
    ``padded_length``: the batch is padded to this length and attention gets a mask (see above).
    """
    a, h = compute, shape.hidden
    total = 2 * (4 * h + 4)  # RMSNorms
    kv = shape.q_out if padded_length else shape.kv_out  # with a mask, k and v are repeated to every head
    total += a * (2 * shape.q_out + 2 * kv) + 4 * shape.heads  # attention
    total += a * padded_length if padded_length else 0  # each layer's own copy of the mask, one row per token
    total += 3 * a * shape.intermediate  # gated MLP
    linears = shape.linears()
    if lora_targets is None:
        total += sum(a * n_in for n_in, _ in linears.values()) + 2 * a * h
    else:
        total += sum(a * (linears[name][0] + r) for name in set(lora_targets) if name in linears)
    return total


def nograd_layer_bytes(shape: Shape, compute: int, stream: int) -> int:
    """Bytes alive per token in one layer of a forward pass without gradients (reference log-probs): the
    residual stream and its normalized copy, then the MLP's up output, SiLU output and product."""
    return 2 * stream * shape.hidden + 3 * compute * shape.intermediate


def head_bytes(shape: Shape, tokens: int, compute: int, stream: int, fused: bool, grad: bool, cast: bool = False,
               weight_grad: bool = False) -> int:
    """The LM head and log-probabilities of ``tokens`` positions (see the note above).

    Fused: the head's saved input, one 4096 x 32768 tile in the compute dtype, a compute-dtype copy of the
    head's weight when it is stored in another dtype (``cast``), and in the backward pass the fp32 gradient of
    the input and its cast back. ``weight_grad``: the head itself is trained (fp32 gradient accumulator).
    """
    grad_weight = shape.vocab * shape.hidden * 4 if weight_grad else 0
    if fused:
        total = tokens * shape.hidden * stream + min(tokens, TOKEN_TILE) * VOCAB_TILE * compute
        total += min(shape.vocab, VOCAB_TILE) * shape.hidden * compute if cast else 0
        return total + (tokens * shape.hidden * (4 + stream) + grad_weight if grad else 0)
    return tokens * shape.vocab * (compute + 4 + (4 if grad else 0)) + (grad_weight if grad else 0)


@dataclass
class TrainSetup:
    """A training stage, as far as its memory goes."""

    micro_batch: int = 8
    max_length: int = 1024
    preference: bool = True  # chosen + rejected per row, and a reference model (DPO-like)
    lora_r: int | None = None  # None: full fine-tuning
    lora_targets: list[str] | str = "all-linear"
    lora_bias: str = "none"
    quantize_4bit: bool = False  # QLoRA: nf4 base weights, the rest in the compute dtype
    compute_dtype: str | None = "bfloat16"  # autocast dtype; None: no autocast, the weights' own dtype
    checkpointing: bool = False
    eight_bit_optimizer: bool = False  # AdamW moments in 1 byte each instead of the parameters' dtype
    reference: str = "none"  # "precompute" (its own pass before training), "in-step", "model" (a second copy)
    reference_batch: int | None = None  # rows per precompute batch
    fused_head: bool = True


def train_estimate(config: dict[str, Any], setup: TrainSetup) -> Estimate | None:
    """Peak memory of one training step (and of the reference pass, when it is a phase of its own)."""
    shape = shape_of(config)
    params = param_count(config)
    if shape is None or params is None:
        return None
    weight_dtype = dtype_of(config) or "float32"
    compute_dtype = setup.compute_dtype or weight_dtype
    if setup.quantize_4bit:  # the model is loaded with dtype = the compute dtype around the 4-bit linears
        weight_dtype = compute_dtype
    w, a = dtype_bytes(weight_dtype), dtype_bytes(compute_dtype)
    # Two different float dtypes promote to float32: the residual stream of fp16 weights under bf16 autocast.
    stream = w if compute_dtype == weight_dtype else 4
    cast = a if compute_dtype != weight_dtype else 0  # bytes of an autocast copy of a weight
    sequences = (2 if setup.preference else 1) * setup.micro_batch
    tokens = sequences * setup.max_length
    notes = [
        f"{sequences} sequences x {setup.max_length} tokens per step" + (" (chosen + rejected)" if setup.preference else ""),
        f"compute in {compute_dtype}, weights in {'4-bit nf4 + ' if setup.quantize_4bit else ''}{weight_dtype}",
    ]
    linears = shape.linears()
    layer_linear_weights = sum(n_in * n_out for n_in, n_out in linears.values())
    memory: dict[str, int] = {}
    if setup.quantize_4bit:  # nf4 with double quantization: ~4.13 bits per weight of the decoder's linears
        memory["weights"] = int(shape.layers * layer_linear_weights * 4.127 / 8) + (params - shape.layers * layer_linear_weights) * w
    else:
        memory["weights"] = params * w
    moments = 2 if setup.eight_bit_optimizer else None
    if setup.lora_r is not None:
        r = setup.lora_r
        trainable = lora_params(config, r, setup.lora_targets, setup.lora_bias) or 0
        adapter = 2 if setup.quantize_4bit else 4  # peft keeps adapters in fp32; trl casts them to bf16 for QLoRA
        memory["LoRA+Adam"] = trainable * (2 * adapter + (moments or 2 * adapter))  # weights, grads, moments
        targets: list[str] | None = [n for n in LAYER_LINEARS if _targeted(n, setup.lora_targets)]
        layer_copies = (0 if setup.quantize_4bit else cast * layer_linear_weights) + a * sum(
            r * (linears[n][0] + linears[n][1]) for n in targets
        )
    else:
        trainable = params
        # Gradients and AdamW's moments in the weights' dtype: transformers' Trainer keeps no fp32 master copy
        # of weights loaded in half precision.
        memory["grads+Adam"] = params * (w + (moments or 2 * w))
        targets = None
        layer_copies = cast * layer_params(shape)
        notes.append("full fine-tuning")
    if setup.reference == "model":
        memory["reference model"] = memory["weights"]

    per_layer = layer_activation_bytes(shape, a, targets, setup.lora_r or 0, padded_length=setup.max_length)
    if setup.checkpointing:
        activations = shape.layers * tokens * stream * shape.hidden + tokens * per_layer
        copies = layer_copies
    else:
        activations = shape.layers * tokens * per_layer
        copies = shape.layers * layer_copies
    activations += tokens * (4 * shape.hidden + 4)  # the final norm
    activations += 2 * tokens * shape.hidden * 4  # backward: the residual stream's gradient, in flight
    memory["activations"] = activations
    if copies:
        memory["autocast weight copies"] = copies
    memory["logits"] = head_bytes(shape, tokens, a, stream, setup.fused_head, grad=True, cast=cast > 0,
                                  weight_grad=setup.lora_r is None)
    if setup.reference == "in-step":  # a forward pass without gradients after the policy's, before backward
        memory["reference pass"] = tokens * nograd_layer_bytes(shape, a, stream) + head_bytes(
            shape, tokens, a, stream, setup.fused_head, grad=False, cast=cast > 0
        )
    estimate = Estimate(memory=memory, notes=notes, output={"config": dict(config), "trainable_params": trainable})
    if setup.reference == "precompute":
        rows = setup.reference_batch or 2 * setup.micro_batch
        ref_tokens = 2 * rows * setup.max_length
        ref = {
            "weights": memory["weights"],
            "activations": ref_tokens * nograd_layer_bytes(shape, a, stream) + layer_copies,
            "logits": head_bytes(shape, ref_tokens, a, stream, setup.fused_head, grad=False, cast=cast > 0),
        }
        step, ref_total = sum(memory.values()), sum(ref.values())
        estimate.phases = {"train step": step, "reference pass": ref_total}
        notes.append(f"reference log-probs: a pass of their own before training, {rows} rows per batch (none when cached)")
        if ref_total > step:
            estimate.memory = ref
    elif setup.reference == "in-step":
        notes.append("reference log-probs: a forward pass without gradients in every step"
                     + (" (adapter disabled)" if setup.lora_r is not None else ""))
    if setup.checkpointing:
        notes.append("gradient checkpointing: each layer keeps its input; one layer is recomputed at a time")
    return estimate


# -- the plan -----------------------------------------------------------------------------------------
@dataclass
class PlanEstimates:
    models: dict[str, dict[str, Any] | None]  # alias -> {"params", "bytes", "dtype"} or None
    stages: dict[str, Estimate | None]


def estimate_plan(plan: Plan, env: SourceEnv) -> PlanEstimates:
    """Ask each model source for its config and each stage kind for its estimate, in execution order.

    Nothing here may fail the plan: an error or an unknown architecture is no estimate.
    """
    from sakura_core.stage import CheckEnv

    recipe = plan.recipe
    outputs: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, Any] | None] = {}
    for alias, node in plan.sources.items():
        try:
            config = node.model.source.config(node.model.options, env, node.fingerprint)
        except Exception:  # noqa: BLE001 - an estimate is never an error
            config = None
        outputs[alias] = {"config": config} if isinstance(config, dict) else {}
        params = param_count(config) if isinstance(config, dict) else None
        models[alias] = (
            {"source": node.model.source_name, "params": params, "bytes": model_bytes(config), "dtype": dtype_of(config)}
            if params is not None else None
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
    return f"{name}: " + " · ".join(parts) if parts else None

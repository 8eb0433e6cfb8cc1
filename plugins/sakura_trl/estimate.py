"""Training memory for ``sakura plan``: LoRA sizes, activations, the LM head, one step and the reference pass.

Pure functions over config dicts (no torch, no I/O), on the decoder shapes of ``sakura_models.shapes``.
Memory is what PyTorch allocates on one device (``torch.cuda.max_memory_allocated``), without the CUDA
context (~0.5-1 GB) and allocator fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from sakura_core.estimate import Estimate, dtype_bytes, dtype_of
from sakura_models.shapes import LAYER_LINEARS, Shape, layer_params, param_count, shape_of


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


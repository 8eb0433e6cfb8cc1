"""sakura's native merge methods: each reproduces mergekit 0.1.5's arithmetic (same dtypes, same order of
operations) so results agree, on sakura's streaming executor. The contract is ``sakura_merge.contract``;
the methods only mergekit implements are in ``sakura_merge.bridge``. No torch at import time.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from pydantic import Field

from sakura_core.options import Options
from sakura_merge.contract import MergeCall, MergeMethod


class LinearOptions(Options):
    weight: Optional[float] = None
    """The model's weight in the weighted sum."""
    normalize: bool = True
    """Divide the weighted sum by the sum of the weights."""


def linear(call: MergeCall):
    import torch

    first = call.tensors[0]
    dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    weights = torch.tensor([p.weight for p in call.model_params], dtype=dtype, device=first.device)
    result = torch.zeros_like(first, dtype=dtype)
    for tensor, coefficient in zip(call.tensors, weights.unbind(0)):
        result.addcmul_(tensor, coefficient)
    if call.params.normalize:
        result.div_(weights.sum())
    return result.to(first.dtype)


class SlerpOptions(Options):
    t: Optional[float] = None
    """Where the result lies on the arc from the base model (0) to the other model (1); beyond, the arc is
    extended (mergekit bounds it neither)."""


_CHUNK_ELEMENTS = 1024 * 1024  # mergekit's: its norms and dot product are reduced chunk by chunk of this size
_scratch = threading.local()


def slerp(call: MergeCall):
    """Spherical interpolation from the base (t=0) to the other model (t=1), over the whole tensor."""
    v0 = call.tensors[call.base]
    v1 = call.tensors[1 - call.base]
    return slerp_tensors(call.params.t, v0, v1)


def slerp_tensors(t: float, v0: Any, v1: Any, dot_threshold: float = 0.9995, eps: float = 1e-8):
    """mergekit 0.1.5's ``slerp`` on a flattened tensor, operation for operation, so results are bit-identical
    (even where the two terms cancel): float32 arithmetic (float64 for float64 inputs), norms and the dot
    product reduced over the same chunks, the result in the inputs' dtype.

    What differs is where the intermediates live: mergekit allocates each chunk's conversions, quotients
    and products afresh, and sakura used to convert whole half tensors to float32. Here every chunk passes
    through two reused scratch buffers (8 MiB for float32), small enough to stay in the CPU cache, and the
    result is written straight into its dtype, with no allocation the size of a tensor except the result.
    Timed alone over the tensors of the 200M bench pair (float16, 2-core VM): 0.37 s against 0.95 s.
    """
    import torch

    dtype = torch.float64 if v0.dtype == torch.float64 else torch.float32
    a = v0.reshape(1, -1)
    b = v1.reshape(1, -1)
    tt = torch.tensor([[t]], dtype=dtype, device=v0.device)
    n = a.shape[1]
    if not n:
        return ((1 - tt) * a + tt * b).reshape(v0.shape).to(v0.dtype)
    spans = [(s, min(n, s + _CHUNK_ELEMENTS)) for s in range(0, n, _CHUNK_ELEMENTS)]
    scratch_a, scratch_b = _scratch_buffers(dtype, v0.device)

    def load(source, scratch, s: int, e: int):
        """The chunk in the compute dtype: the input itself when it has it, else converted into the scratch."""
        if source.dtype == dtype:
            return source[:, s:e]
        x = scratch[: e - s].view(1, -1)
        x.copy_(source[:, s:e])
        return x

    norm_a = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(load(a, scratch_a, s, e), dim=1, keepdim=True) for s, e in spans]), dim=0
    )
    norm_b = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(load(b, scratch_b, s, e), dim=1, keepdim=True) for s, e in spans]), dim=0
    )
    norm_a = torch.where(norm_a > eps, norm_a, 1)
    norm_b = torch.where(norm_b > eps, norm_b, 1)
    dot_parts = []
    for s, e in spans:
        x = torch.div(load(a, scratch_a, s, e), norm_a, out=scratch_a[: e - s].view(1, -1))
        y = torch.div(load(b, scratch_b, s, e), norm_b, out=scratch_b[: e - s].view(1, -1))
        dot_parts.append(torch.mul(x, y, out=x).sum(dim=1, keepdim=True))
    dot = torch.stack(dot_parts).sum(dim=0).clamp(-1, 1)
    linear_mask = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(linear_mask, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear_mask, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    coef_b = torch.where(linear_mask, tt, torch.sin(tt * theta) / sin_theta)
    result = torch.empty_like(a)
    for s, e in spans:
        x = torch.mul(load(a, scratch_a, s, e), coef_a, out=scratch_a[: e - s].view(1, -1))
        y = torch.mul(load(b, scratch_b, s, e), coef_b, out=scratch_b[: e - s].view(1, -1))
        torch.add(x, y, out=result[:, s:e])  # computed in the compute dtype, rounded once into the result's
    return result.reshape(v0.shape)


def _scratch_buffers(dtype: Any, device: Any) -> tuple[Any, Any]:
    """Two chunk-sized buffers of ``dtype`` on ``device``, made once per thread and reused by every call."""
    import torch

    key = (dtype, str(device))
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    if key not in buffers:
        # normal tensors, not inference tensors: those could not be written outside inference mode later
        with torch.inference_mode(False):
            buffers[key] = tuple(torch.empty(_CHUNK_ELEMENTS, dtype=dtype, device=device) for _ in range(2))
    return buffers[key]


class TaskArithmeticOptions(Options):
    weight: Optional[float] = None
    """Weight of the model's task vector (its difference from the base model)."""
    density: float = 1.0
    """Fraction of the task vector's entries kept: the largest by magnitude (``ties``) or a random draw
    (``dare_*``); ``task_arithmetic`` keeps them all. At least 1 keeps them all, at most 0 none."""
    normalize: bool = False
    """Divide the summed task vectors by the sum of the weights (with sign election: of the models that agree
    with the elected sign, entry by entry)."""
    rescale: bool = False
    """Scale each pruned task vector back to its L1 norm before pruning."""
    int8_mask: bool = False
    """Hold the sign-agreement mask in int8 to save memory (same result)."""
    lambda_: float = Field(1.0, alias="lambda")
    """Factor applied to the merged task vector before it is added to the base model."""


class TiesOptions(TaskArithmeticOptions):
    normalize: bool = True


class DareOptions(TaskArithmeticOptions):
    density: float = Field(1.0, ge=0)
    """Probability that each entry of the task vector is kept (a random draw); at least 1 keeps them all.
    Negative probabilities are refused (mergekit fails on them mid-merge)."""
    rescale: bool = True


def task_arithmetic(call: MergeCall, consensus: bool, sparsify: Optional[str]) -> Any:
    import torch

    base = call.base_tensor
    others = call.others
    if not others:
        return base
    deltas = base.new_empty((len(others), *base.shape))
    for row, index in enumerate(others):
        delta = call.tensors[index] - base
        p = call.model_params[index]
        if sparsify == "magnitude":
            delta = _magnitude(delta, p.density, call.params.rescale)
        elif sparsify == "random":
            delta = _bernoulli(delta, p.density, call.params.rescale, call.generator)
        deltas[row] = delta
        del delta
    weights = torch.tensor([call.model_params[i].weight for i in others], dtype=deltas.dtype, device=deltas.device)
    while deltas.dim() > weights.dim():
        weights.unsqueeze_(-1)
    deltas.mul_(weights)
    if consensus:
        mask_dtype = torch.int8 if call.params.int8_mask else base.dtype
        sign = deltas.sign().to(mask_dtype)
        majority = (deltas.sum(dim=0) >= 0).to(mask_dtype) * 2 - 1
        mask = sign == majority
        mixed = (deltas * mask).sum(dim=0)
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if call.params.normalize:
        mixed /= divisor
    if call.params.lambda_ != 1:
        mixed *= call.params.lambda_
    return (base + mixed).to(base.dtype)


def _rescaled(tensor, mask, rescale: bool, eps: float = 1e-7):
    masked = tensor * mask
    if not rescale:
        return masked
    before, after = tensor.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def _magnitude(tensor, density: float, rescale: bool):
    import torch

    if density >= 1:
        return tensor
    if density <= 0 or tensor.numel() == 0:
        return torch.zeros_like(tensor)
    k = max(1, int(density * tensor.numel()))
    mask = torch.zeros(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
    w = tensor.abs().reshape(-1)
    if w.device.type == "cpu":
        w = w.float()
    mask[torch.argsort(w, descending=True)[:k]] = 1
    return _rescaled(tensor, mask.reshape_as(tensor), rescale)


def _bernoulli(tensor, density: float, rescale: bool, generator):
    import torch

    if density >= 1:
        return tensor
    work = tensor.dtype if (tensor.device.type != "cpu" or tensor.dtype == torch.bfloat16) else torch.float32
    mask = torch.bernoulli(torch.full_like(tensor, density, dtype=work), generator=generator)
    return _rescaled(tensor.to(work), mask, rescale).to(tensor.dtype)


class ModelStockOptions(Options):
    filter_wise: bool = False
    """Compute the interpolation ratio for each row of a weight matrix instead of once per tensor."""


def model_stock(call: MergeCall):
    import torch

    w_0 = call.base_tensor
    ws = [call.tensors[i] for i in call.others]
    out_shape = w_0.shape
    if call.params.filter_wise:
        if w_0.dim() == 1:
            w_0 = w_0.unsqueeze(0)
            ws = [w.unsqueeze(0) for w in ws]
    else:
        w_0 = w_0.reshape(-1)
        ws = [w.reshape(-1) for w in ws]
    offsets = [w - w_0 for w in ws]
    cos_thetas = []
    for idx, a in enumerate(offsets):
        for b in offsets[idx + 1 :]:
            norm_product = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
            cos_thetas.append(((a * b).sum(dim=-1) / norm_product.clamp(min=1e-6)).clamp(-1, 1))
    cos_theta = torch.stack(cos_thetas).mean(dim=0).unsqueeze(-1)
    count = len(ws)
    denominator = 1 + (count - 1) * cos_theta
    singular = denominator.abs() < 1e-6
    safe = torch.where(singular, torch.ones_like(denominator), denominator)
    t = torch.where(singular, torch.zeros_like(cos_theta), (count * cos_theta) / safe)
    average = sum(ws) / count
    return (t * average + (1 - t) * w_0).reshape(out_shape)


class PassthroughOptions(Options):
    scale: Optional[float] = None
    """Factor the copied tensors are multiplied by; unset: copied unchanged."""


def passthrough(call: MergeCall):
    scale = call.model_params[0].scale
    tensor = call.tensors[0]
    return tensor if scale is None else tensor * scale


TA_PER_MODEL = ("weight", "density")


class Linear(MergeMethod):
    description = "weighted average of the models"
    mergekit_name = "linear"  # a port of mergekit's method
    Options = LinearOptions
    per_model = ("weight",)
    required = ("weight",)
    upcast_half = True

    def run(self, call: MergeCall) -> Any:
        return linear(call)


class Slerp(MergeMethod):
    description = "spherical interpolation between the base and one other model"
    mergekit_name = "slerp"  # a port of mergekit's method
    Options = SlerpOptions
    required = ("t",)
    base = "required"
    min_models = 2
    max_models = 2

    def run(self, call: MergeCall) -> Any:
        return slerp(call)


class TaskArithmetic(MergeMethod):
    description = "base + weighted sum of task vectors"
    mergekit_name = "task_arithmetic"  # a port of mergekit's method
    Options = TaskArithmeticOptions
    per_model = TA_PER_MODEL
    per_model_scope = "non_base"
    required = ("weight",)
    base = "required"
    consensus = False  # TIES sign election
    sparsify: Optional[str] = None  # "magnitude" (TIES) or "random" (DARE)

    def run(self, call: MergeCall) -> Any:
        return task_arithmetic(call, self.consensus, self.sparsify)


class Ties(TaskArithmetic):
    description = "TIES: trim by magnitude, elect signs, disjoint mean"
    mergekit_name = "ties"  # a port of mergekit's method
    Options = TiesOptions
    consensus = True
    sparsify = "magnitude"


class DareTies(TaskArithmetic):
    description = "DARE random drop + rescale, TIES sign election"
    mergekit_name = "dare_ties"  # a port of mergekit's method
    Options = DareOptions
    randomized = True
    consensus = True
    sparsify = "random"


class DareLinear(TaskArithmetic):
    description = "DARE random drop + rescale, linear sum"
    mergekit_name = "dare_linear"  # a port of mergekit's method
    Options = DareOptions
    randomized = True
    sparsify = "random"


class ModelStock(MergeMethod):
    description = "Model Stock: interpolate toward the average by the models' geometry"
    mergekit_name = "model_stock"  # a port of mergekit's method
    Options = ModelStockOptions
    base = "required"
    min_models = 3

    def run(self, call: MergeCall) -> Any:
        return model_stock(call)


class Passthrough(MergeMethod):
    description = "copy tensors (layer slices, depth up-scaling)"
    mergekit_name = "passthrough"  # a port of mergekit's method
    Options = PassthroughOptions
    per_model = ("scale",)
    max_models = 1

    def run(self, call: MergeCall) -> Any:
        return passthrough(call)


NATIVE_METHODS: dict[str, type[MergeMethod]] = {
    "linear": Linear,
    "slerp": Slerp,
    "task_arithmetic": TaskArithmetic,
    "ties": Ties,
    "dare_ties": DareTies,
    "dare_linear": DareLinear,
    "model_stock": ModelStock,
    "passthrough": Passthrough,
}


def builtin_methods() -> dict[str, MergeMethod]:
    """The native methods (under mergekit's names) and the bridged ones, as registered."""
    from sakura_merge.bridge import MERGEKIT_ONLY, MergekitMethod

    methods: dict[str, MergeMethod] = {name: cls() for name, cls in NATIVE_METHODS.items()}
    methods.update({name: MergekitMethod(name) for name in MERGEKIT_ONLY})
    return methods

"""The merge-method contract: a tensor function plus a pydantic options model.

A plugin registers methods with::

    from sakura_core import hookimpl
    from sakura_merge.methods import MergeMethod
    from sakura_core.stage import Options

    class MeanParams(Options):
        weight: float = 1.0          # a per-model parameter (listed in per_model below)

    def mean(call):                  # call: MergeCall; return one tensor shaped like the inputs
        return sum(t * p.weight for t, p in zip(call.tensors, call.model_params)) / len(call.tensors)

    @hookimpl
    def sakura_register_merge_methods(register):
        register("mean", MergeMethod(mean, MeanParams, per_model=("weight",)))

The executor owns everything else: reading tensors (already converted to the configured ``dtype``), the
device, resolving gradients and filters into one value per tensor, validating every value with the options
model before any work, casting to ``out_dtype`` and writing. This module imports no torch at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from pydantic import Field

from sakura_core.stage import Options


@dataclass
class MergeCall:
    """One output tensor's inputs, as a method's tensor function sees them."""

    name: str  # the output tensor's name, e.g. model.layers.3.self_attn.q_proj.weight
    tensors: list[Any]  # torch tensors in model order, same shape and dtype, on the compute device
    base: Optional[int]  # index of the base model's tensor in ``tensors`` (None when there is no base)
    params: Any  # the method's options model, shared parameters resolved for this tensor
    model_params: list[Any]  # one options model per input, per-model parameters resolved for that input
    generator: Any = None  # a torch.Generator seeded from (seed, tensor name), for randomized methods

    @property
    def base_tensor(self) -> Any:
        assert self.base is not None
        return self.tensors[self.base]

    @property
    def others(self) -> list[int]:
        """Indices of the non-base inputs."""
        return [i for i in range(len(self.tensors)) if i != self.base]


@dataclass(frozen=True)
class MergeMethod:
    """A merge method: ``function(call) -> tensor`` plus the options model its parameters validate with.

    ``per_model`` names the parameters given per input model (``weight``, ``density``); the others are
    shared. ``per_model_scope`` says whether the base model takes per-model parameters ("all") or not
    ("non_base", as in task arithmetic). ``required`` names parameters that must be set somewhere.
    """

    function: Callable[[MergeCall], Any]
    options: type[Options]
    per_model: tuple[str, ...] = ()
    per_model_scope: Literal["all", "non_base"] = "all"
    required: tuple[str, ...] = ()
    base: Literal["required", "optional", "ignored"] = "ignored"
    min_models: int = 1
    max_models: Optional[int] = None
    randomized: bool = False
    description: str = ""
    native: bool = True  # False: runs through mergekit's executor (the bridge)
    mergekit_name: Optional[str] = None  # the name mergekit knows the method by (bridge and comparisons)
    # The function computes in float32 whatever the half input dtype, rounding its result to the input
    # dtype: the executor may then hand it float32 copies of half inputs (made on the reader threads, in
    # parallel with the computation) and round the result to the compute dtype itself.
    upcast_half: bool = False

    def parameter_names(self) -> list[str]:
        return list(self.options.model_fields)


# -- native methods --------------------------------------------------------------------------------
# Each reproduces mergekit 0.1.5's arithmetic (same dtypes, same order of operations) so results agree.


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
    t: Optional[float] = Field(None, ge=0, le=1)
    """Where the result lies on the arc from the base model (0) to the other model (1)."""


_CHUNK_ELEMENTS = 1024 * 1024


def slerp(call: MergeCall):
    """Spherical interpolation from the base (t=0) to the other model (t=1), over the whole tensor."""
    import torch

    v0 = call.tensors[call.base]
    v1 = call.tensors[1 - call.base]
    return slerp_tensors(call.params.t, v0, v1)


def slerp_tensors(t: float, v0: Any, v1: Any, dot_threshold: float = 0.9995, eps: float = 1e-8):
    import torch

    if v0.dtype in (torch.float16, torch.bfloat16):
        return _slerp_half(t, v0, v1, dot_threshold, eps)
    dtype = torch.float64 if v0.dtype == torch.float64 else torch.float32
    a = v0.reshape(1, -1)
    b = v1.reshape(1, -1)
    tt = torch.tensor([[t]], dtype=dtype, device=v0.device)
    if not a.shape[1]:
        return ((1 - tt) * a + tt * b).reshape(v0.shape).to(v0.dtype)
    n = a.shape[1]
    norm_a_parts, norm_b_parts = [], []
    for start in range(0, n, _CHUNK_ELEMENTS):
        norm_a_parts.append(torch.linalg.vector_norm(a[:, start : start + _CHUNK_ELEMENTS].to(dtype), dim=1, keepdim=True))
        norm_b_parts.append(torch.linalg.vector_norm(b[:, start : start + _CHUNK_ELEMENTS].to(dtype), dim=1, keepdim=True))
    norm_a = torch.linalg.vector_norm(torch.stack(norm_a_parts), dim=0)
    norm_b = torch.linalg.vector_norm(torch.stack(norm_b_parts), dim=0)
    norm_a = torch.where(norm_a > eps, norm_a, 1)
    norm_b = torch.where(norm_b > eps, norm_b, 1)
    dot_parts = []
    for start in range(0, n, _CHUNK_ELEMENTS):
        x = a[:, start : start + _CHUNK_ELEMENTS].to(dtype) / norm_a
        y = b[:, start : start + _CHUNK_ELEMENTS].to(dtype) / norm_b
        dot_parts.append((x * y).sum(dim=1, keepdim=True))
    dot = torch.stack(dot_parts).sum(dim=0).clamp(-1, 1)
    linear_mask = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(linear_mask, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear_mask, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    coef_b = torch.where(linear_mask, tt, torch.sin(tt * theta) / sin_theta)
    result = torch.empty_like(a)
    for start in range(0, n, _CHUNK_ELEMENTS):
        x = a[:, start : start + _CHUNK_ELEMENTS].to(dtype)
        y = b[:, start : start + _CHUNK_ELEMENTS].to(dtype)
        result[:, start : start + _CHUNK_ELEMENTS] = coef_a * x + coef_b * y
    return result.reshape(v0.shape)


def _slerp_half(t: float, v0: Any, v1: Any, dot_threshold: float, eps: float):
    """Half-precision inputs: mergekit's float32 arithmetic, operation for operation (so results are
    bit-identical, even where the two terms cancel), but each input converted to float32 once instead of
    once per pass, and the half result written chunk by chunk."""
    import torch

    shape = v0.shape
    a = v0.reshape(1, -1).float()
    b = v1.reshape(1, -1).float()
    n = a.shape[1]
    tt = torch.tensor([[t]], dtype=torch.float32, device=v0.device)
    if not n:
        return v0.clone()
    step = _CHUNK_ELEMENTS
    norm_a = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(a[:, s : s + step], dim=1, keepdim=True) for s in range(0, n, step)]), dim=0
    )
    norm_b = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(b[:, s : s + step], dim=1, keepdim=True) for s in range(0, n, step)]), dim=0
    )
    norm_a = torch.where(norm_a > eps, norm_a, 1)
    norm_b = torch.where(norm_b > eps, norm_b, 1)
    dot = torch.stack(
        [((a[:, s : s + step] / norm_a) * (b[:, s : s + step] / norm_b)).sum(dim=1, keepdim=True) for s in range(0, n, step)]
    ).sum(dim=0).clamp(-1, 1)
    linear_mask = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(linear_mask, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear_mask, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    coef_b = torch.where(linear_mask, tt, torch.sin(tt * theta) / sin_theta)
    out = torch.empty((1, n), dtype=v0.dtype, device=v0.device)
    for s in range(0, n, step):
        out[:, s : s + step] = coef_a * a[:, s : s + step] + coef_b * b[:, s : s + step]
    return out.reshape(shape)


class TaskArithmeticOptions(Options):
    weight: Optional[float] = None
    """Weight of the model's task vector (its difference from the base model)."""
    density: float = Field(1.0, ge=0, le=1)
    """Fraction of the task vector's entries kept: the largest by magnitude (``ties``) or a random draw
    (``dare_*``); ``task_arithmetic`` keeps them all."""
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
    rescale: bool = True


def _task_arithmetic(consensus: bool, sparsify: Optional[str]):
    def merge(call: MergeCall):
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

    return merge


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

NATIVE_METHODS: dict[str, MergeMethod] = {
    "linear": MergeMethod(linear, LinearOptions, per_model=("weight",), required=("weight",), upcast_half=True,
                          description="weighted average of the models"),
    "slerp": MergeMethod(slerp, SlerpOptions, required=("t",), base="required", min_models=2, max_models=2, upcast_half=True,
                         description="spherical interpolation between the base and one other model"),
    "task_arithmetic": MergeMethod(_task_arithmetic(False, None), TaskArithmeticOptions, per_model=TA_PER_MODEL,
                                   per_model_scope="non_base", required=("weight",), base="required",
                                   description="base + weighted sum of task vectors"),
    "ties": MergeMethod(_task_arithmetic(True, "magnitude"), TiesOptions, per_model=TA_PER_MODEL,
                        per_model_scope="non_base", required=("weight",), base="required",
                        description="TIES: trim by magnitude, elect signs, disjoint mean"),
    "dare_ties": MergeMethod(_task_arithmetic(True, "random"), DareOptions, per_model=TA_PER_MODEL,
                             per_model_scope="non_base", required=("weight",), base="required", randomized=True,
                             description="DARE random drop + rescale, TIES sign election"),
    "dare_linear": MergeMethod(_task_arithmetic(False, "random"), DareOptions, per_model=TA_PER_MODEL,
                               per_model_scope="non_base", required=("weight",), base="required", randomized=True,
                               description="DARE random drop + rescale, linear sum"),
    "model_stock": MergeMethod(model_stock, ModelStockOptions, base="required", min_models=3,
                               description="Model Stock: interpolate toward the average by the models' geometry"),
    "passthrough": MergeMethod(passthrough, PassthroughOptions, per_model=("scale",), max_models=1,
                               description="copy tensors (layer slices, depth up-scaling)"),
}


# -- the mergekit bridge ---------------------------------------------------------------------------
# Every other method mergekit 0.1.5 has, with its parameters ({name: (per-model scope or "shared", default)})
# so that configurations are checked before any work. tests/test_merge_methods.py checks this table
# against mergekit's own registry.

_GTA_SHARED = {"int8_mask": False, "normalize": False, "rescale": False, "lambda": 1.0}
MERGEKIT_ONLY: dict[str, dict[str, Any]] = {
    "multislerp": {"base": "optional", "min": 1, "max": None, "shared": {"normalize_weights": True, "eps": 1e-8},
                   "per_model": {"weight": None}, "scope": "non_base", "required": ("weight",)},
    "nearswap": {"base": "required", "min": 2, "max": 2, "shared": {"t": None}, "per_model": {}, "required": ("t",)},
    "ram": {"base": "required", "min": 1, "max": None, "shared": {"epsilon": 1e-5}, "per_model": {}},
    "ramplus_tl": {"base": "required", "min": 1, "max": None, "shared": {"r": 0.1, "alpha": 0.2, "epsilon": 1e-5},
                   "per_model": {}},
    "sce": {"base": "required", "min": 1, "max": None, "shared": {"int8_mask": False, "select_topk": 1.0},
            "per_model": {}},
    "nuslerp": {"base": "optional", "min": 1, "max": None,
                "shared": {"nuslerp_row_wise": False, "nuslerp_flatten": True},
                "per_model": {"weight": None}, "scope": "non_base", "required": ("weight",)},
    "arcee_fusion": {"base": "required", "min": 2, "max": 2, "shared": {}, "per_model": {}},
    "karcher": {"base": "ignored", "min": 1, "max": None, "shared": {"max_iter": 10, "tol": 1e-5}, "per_model": {}},
    "breadcrumbs": {"base": "required", "min": 1, "max": None, "shared": _GTA_SHARED,
                    "per_model": {"weight": None, "density": 1.0, "gamma": 0.01}, "scope": "non_base",
                    "required": ("weight",)},
    "breadcrumbs_ties": {"base": "required", "min": 1, "max": None, "shared": _GTA_SHARED,
                         "per_model": {"weight": None, "density": 1.0, "gamma": 0.01}, "scope": "non_base",
                         "required": ("weight",)},
    "della": {"base": "required", "min": 1, "max": None, "shared": {**_GTA_SHARED, "normalize": True, "rescale": True},
              "per_model": {"weight": None, "density": 1.0, "epsilon": 0.15}, "scope": "non_base",
              "required": ("weight",)},
    "della_linear": {"base": "required", "min": 1, "max": None, "shared": {**_GTA_SHARED, "rescale": True},
                     "per_model": {"weight": None, "density": 1.0, "epsilon": 0.15}, "scope": "non_base",
                     "required": ("weight",)},
}


# What each parameter of a mergekit-only method does (docs/recipes.md is generated from these): the
# entry "method.parameter" where the meaning depends on the method, else "parameter".
MERGEKIT_PARAMETER_DOCS: dict[str, str] = {
    "weight": "Weight of the model's task vector (its difference from the base model).",
    "multislerp.weight": "The model's weight in the interpolation on the hypersphere.",
    "nuslerp.weight": "The model's relative weight: the result lies between the two models in proportion.",
    "density": "Fraction of the task vector's entries kept.",
    "breadcrumbs.density": "Fraction of the task vector's entries kept, below the outliers that gamma removes.",
    "breadcrumbs_ties.density": "Fraction of the task vector's entries kept, below the outliers that gamma removes.",
    "gamma": "Fraction of the task vector's entries removed as the largest-magnitude outliers.",
    "epsilon": "Spread of the keep probabilities: from density - epsilon (smallest entries) to density + epsilon (largest).",
    "ram.epsilon": "Task vector entries whose magnitude is at most this count as unchanged.",
    "ramplus_tl.epsilon": "Task vector entries whose magnitude is at most this count as unchanged.",
    "normalize": "Divide the summed task vectors by the sum of the weights.",
    "rescale": "Scale each pruned task vector back to its L1 norm before pruning.",
    "int8_mask": "Hold the masks in int8 to save memory (same result).",
    "lambda": "Factor applied to the merged task vector before it is added to the base model.",
    "normalize_weights": "Divide the weights by their sum.",
    "eps": "Small constant that keeps the normalization numerically stable.",
    "t": "Distance scale: entries where the models differ by at most t take the other model's value, farther apart "
    "its share is t / |difference|.",
    "r": "Boost of the entries only one model changes: they are scaled by 1 + r * min(rho, alpha), rho being that "
    "model's ratio of shared to unique entries.",
    "alpha": "Cap on the ratio rho in that boost.",
    "select_topk": "Fraction of the entries kept: those where the task vectors vary most across models.",
    "nuslerp_row_wise": "With nuslerp_flatten = false: interpolate the rows of each matrix instead of its columns.",
    "nuslerp_flatten": "Interpolate each tensor as one flat vector.",
    "max_iter": "Most iterations of the Karcher mean computation.",
    "tol": "Convergence tolerance of the Karcher mean computation.",
}


def _bridge_unavailable(call: MergeCall):  # pragma: no cover - the executor never calls bridge methods
    raise RuntimeError("this method runs through mergekit's executor")


def bridge_method(name: str) -> MergeMethod:
    """A ``MergeMethod`` describing a mergekit-only method (its options model is built from the table)."""
    from pydantic import create_model

    spec = MERGEKIT_ONLY[name]
    fields: dict[str, Any] = {}
    for pname, default in {**spec["shared"], **spec["per_model"]}.items():
        kind = type(default) if default is not None else float
        key = pname if pname != "lambda" else "lambda_"
        doc = MERGEKIT_PARAMETER_DOCS.get(f"{name}.{pname}", MERGEKIT_PARAMETER_DOCS.get(pname))
        fields[key] = (Optional[kind], Field(default, alias=pname, description=doc) if pname == "lambda"
                       else Field(default, description=doc))
    options = create_model(f"{name.title().replace('_', '')}Options", __base__=Options, **fields)
    return MergeMethod(
        _bridge_unavailable,
        options,
        per_model=tuple(spec["per_model"]),
        per_model_scope=spec.get("scope", "all"),
        required=tuple(spec.get("required", ())),
        base=spec["base"],
        min_models=spec["min"],
        max_models=spec["max"],
        native=False,
        description=f"the {name} method of mergekit",
        mergekit_name=name,
    )


def builtin_methods() -> dict[str, MergeMethod]:
    methods = {name: _with_name(m, name) for name, m in NATIVE_METHODS.items()}
    methods.update({name: bridge_method(name) for name in MERGEKIT_ONLY})
    return methods


def _with_name(method: MergeMethod, name: str) -> MergeMethod:
    from dataclasses import replace

    return replace(method, mergekit_name=name)


__all__ = ["MergeCall", "MergeMethod", "builtin_methods", "field"]

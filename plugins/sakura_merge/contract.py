"""The merge-method contract: what a merge method is, what it receives for each tensor, what it returns.

A merge method is a ``MergeMethod`` whose ``run(call)`` maps one output tensor's inputs (a ``MergeCall``)
to the output tensor, plus an ``Options`` model for its parameters. The executor owns everything else:
reading tensors (already converted to the compute dtype, on the compute device), resolving gradients,
filters and scopes into one value per tensor, validating every value with ``Options`` before any work,
casting to ``out_dtype``, sharding and writing. A plugin registers methods with::

    from sakura_core import hookimpl
    from sakura_core.options import Options
    from sakura_merge import MergeMethod

    class MeanParams(Options):
        weight: float = 1.0          # a per-model parameter (listed in per_model below)

    class Mean(MergeMethod):
        \"\"\"Weighted average of the models.\"\"\"
        Options = MeanParams
        per_model = ("weight",)

        def run(self, call):         # call: MergeCall; return one tensor shaped like the inputs
            weights = [p.weight for p in call.model_params]
            return sum(t * w for t, w in zip(call.tensors, weights)) / sum(weights)

    @hookimpl
    def sakura_register_merge_methods(register):
        register("mean", Mean())

This module imports no torch and no pydantic models at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional

from sakura_core.options import NoOptions
from sakura_core.registry import Implementation

if TYPE_CHECKING:  # pragma: no cover
    from sakura_core.stage import CheckEnv
    from sakura_merge.config import MergeConfig


@dataclass
class MergeCall:
    """One output tensor's inputs, as ``MergeMethod.run`` sees them."""

    name: str
    """The output tensor's name, e.g. ``model.layers.3.self_attn.q_proj.weight``."""
    tensors: list[Any]
    """The inputs' torch tensors in model order: same shape and dtype (the compute dtype), on the compute device."""
    base: Optional[int]
    """Index of the base model's tensor in ``tensors``; None when the merge has no base model."""
    params: Any
    """The method's ``Options`` with the shared parameters resolved for this tensor (filters, gradients)."""
    model_params: list[Any]
    """One ``Options`` per input, with the per-model parameters resolved for that input and this tensor."""
    generator: Any = None
    """The merge's random stream for randomized methods: with a ``seed``, one ``torch.Generator`` seeded with it
    and shared by every call in mergekit's task order (mergekit's ``--random-seed`` draws), or one per tensor
    (``random_stream = "per_tensor"``); None without a seed."""

    @property
    def base_tensor(self) -> Any:
        """The base model's tensor (the method must declare ``base = "required"``)."""
        assert self.base is not None
        return self.tensors[self.base]

    @property
    def others(self) -> list[int]:
        """Indices of the non-base inputs."""
        return [i for i in range(len(self.tensors)) if i != self.base]


class MergeMethod(Implementation):
    """A merge method: ``run(call) -> tensor`` plus the ``Options`` model its parameters validate with.

    Its class attributes tell the executor and the checks how to call it; every check they imply runs at
    ``sakura validate``, before any tensor is read.
    """

    Options: ClassVar[Any] = NoOptions
    """The method's parameters (``weight``, ``t``, ``density``, ...): each field is one parameter, validated for
    every tensor after filters and gradients are resolved."""
    per_model: ClassVar[tuple[str, ...]] = ()
    """Parameters given per input model (``models[i].parameters.weight``); the others are shared."""
    per_model_scope: ClassVar[Literal["all", "non_base"]] = "all"
    """Whether the base model takes per-model parameters ("all") or not ("non_base", as in task arithmetic)."""
    required: ClassVar[tuple[str, ...]] = ()
    """Parameters that must be set somewhere for every tensor (for every model, when per model)."""
    base: ClassVar[Literal["required", "optional", "ignored"]] = "ignored"
    """Whether the merge needs a ``base_model``; with "required" it must be one of the merged models."""
    min_models: ClassVar[int] = 1
    """Fewest models merged (per slice)."""
    max_models: ClassVar[Optional[int]] = None
    """Most models merged (per slice); None: no limit."""
    randomized: ClassVar[bool] = False
    """Draws random numbers from ``call.generator``: with a ``seed`` the executor computes the tensors in the order
    mergekit's executor does, so one seeded stream gives mergekit's draws."""
    native: ClassVar[bool] = True
    """False: the method runs through mergekit's executor (the bridge) and ``run`` is never called."""
    mergekit_name: ClassVar[Optional[str]] = None
    """The name mergekit knows the method by, when it is mergekit's (ported or bridged): model cards then
    describe it with mergekit's semantics and print a mergekit configuration."""
    upcast_half: ClassVar[bool] = False
    """``run`` computes in float32 whatever the half input dtype and rounds its result: the executor may then
    hand it float32 copies of half inputs (made on the reader threads) and round the result itself."""

    def check(self, options: MergeConfig, env: CheckEnv | None) -> None:
        """Checks of the whole merge configuration beyond the generic ones (model counts, parameter names,
        types and ranges, which the executor checks itself): raise ``OptionError(key, message)`` with ``key``
        relative to the merge table. ``options.model_count()`` and ``options.parameter_values(name)`` help."""

    def run(self, call: MergeCall) -> Any:
        """The output tensor for ``call``: same shape as the inputs (the executor casts it to ``out_dtype``)."""
        raise NotImplementedError

    def parameter_names(self) -> list[str]:
        """Every parameter's name as a recipe writes it (``lambda``, not ``lambda_``)."""
        return [info.alias or name for name, info in self.Options.model_fields.items()]

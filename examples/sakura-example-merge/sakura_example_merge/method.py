"""``geometric``: a merge method in one class: an options model and ``run``.

For every weight, the result takes the sign of the (weighted) average and the weighted geometric mean of
the magnitudes: ``sign(sum w_i x_i) * exp(sum w_i log(|x_i| + eps) / sum w_i)``. Weights that all inputs
agree on stay the same size; where the models disagree in size, the smaller magnitudes win more than they
would in a plain average.

The executor does everything else: it streams the tensors, converts them to the recipe's ``dtype``,
resolves ``weight`` per model (filters and layer gradients included) and checks every value against
``GeometricOptions`` before any work.
"""

from __future__ import annotations

from pydantic import Field

from sakura_core.options import Options
from sakura_merge import MergeCall, MergeMethod


class GeometricOptions(Options):
    weight: float = Field(1.0, gt=0, description="per model: its share of the mean")
    eps: float = Field(1e-12, gt=0, description="added to magnitudes before the logarithm")


class Geometric(MergeMethod):
    """Signed weighted geometric mean of the models' weights."""

    Options = GeometricOptions
    per_model = ("weight",)  # given per model (models[i].parameters.weight); eps is shared
    min_models = 2
    version = "1"  # bump when the output for the same input changes on purpose

    def run(self, call: MergeCall):
        import torch

        weights = [p.weight for p in call.model_params]
        total = sum(weights)
        eps = call.params.eps
        work = torch.float64 if call.tensors[0].dtype == torch.float64 else torch.float32
        log_magnitude = torch.zeros_like(call.tensors[0], dtype=work)
        signed_sum = torch.zeros_like(call.tensors[0], dtype=work)
        for tensor, weight in zip(call.tensors, weights):
            x = tensor.to(work)
            log_magnitude.add_(torch.log(x.abs() + eps), alpha=weight / total)
            signed_sum.add_(x, alpha=weight)
        result = torch.sign(signed_sum) * torch.exp(log_magnitude)
        return result.to(call.tensors[0].dtype)

"""The Karcher mean on the unit hypersphere, ported from mergekit 0.1.5 (same arithmetic, same result)."""

from __future__ import annotations

from pydantic import Field

from sakura_core.options import Options
from sakura_merge import MergeCall, MergeMethod


class KarcherOptions(Options):
    max_iter: int = Field(10, ge=1, description="most iterations of the mean's fixed point")
    tol: float = Field(1e-5, gt=0, description="convergence tolerance")


class Karcher(MergeMethod):
    """Weighted Karcher mean of the models' tensors on the unit hypersphere, rescaled by their mean norm."""

    Options = KarcherOptions
    min_models = 1
    url = "https://arxiv.org/abs/2603.04972"
    citation = "Karcher mean merging (arXiv:2603.04972)"

    def run(self, call: MergeCall):
        import torch

        tensors = call.tensors
        if len(tensors) == 1:
            return tensors[0]
        alphas = [1.0 / len(tensors)] * len(tensors)
        max_iter, tol = call.params.max_iter, call.params.tol
        dtype = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
        norms, units = [], []
        for tensor in tensors:
            norm = torch.linalg.vector_norm(tensor.to(dtype))
            norms.append(norm)
            units.append(torch.zeros_like(tensor) if norm.item() == 0.0 else (tensor / norm).to(tensor.dtype))
        valid = [i for i, norm in enumerate(norms) if norm.item() > tol]
        if not valid:
            return sum(tensor * 0 for tensor in tensors)
        total = sum(alphas[i] for i in valid)
        weights = [alphas[i] / total for i in valid]
        valid_units = [units[i] for i in valid]
        mean = torch.zeros_like(valid_units[0])
        for alpha, unit in zip(weights, valid_units):
            mean += alpha * unit
        mean_norm = torch.linalg.vector_norm(mean.to(dtype))
        mean = valid_units[0].clone() if mean_norm.item() < tol else (mean / mean_norm).to(mean.dtype)
        for _ in range(max_iter):
            tangent = torch.zeros_like(mean)
            for alpha, unit in zip(weights, valid_units):
                dot = torch.clamp(torch.dot(mean.flatten(), unit.flatten()), -1.0, 1.0)
                theta = torch.arccos(dot)
                if theta.item() < tol:
                    continue
                tangent += alpha * (theta / torch.sin(theta)) * (unit - dot * mean)
            tangent_norm = torch.linalg.vector_norm(tangent.to(dtype))
            if tangent_norm.item() < tol:
                break
            mean = (torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)).to(mean.dtype)
            unit_norm = torch.linalg.vector_norm(mean.to(dtype))
            if unit_norm.item() > tol:
                mean = (mean / unit_norm).to(mean.dtype)
        scale = sum(alpha * norm for alpha, norm in zip(alphas, norms))
        return scale * mean

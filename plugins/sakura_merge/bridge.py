"""The mergekit bridge: the methods only mergekit implements, and handing a configuration to mergekit's
own executor.

Used for every method sakura has no native implementation of (della, breadcrumbs, sce, nuslerp, karcher,
arcee_fusion, multislerp, ...), for ``tokenizer_source`` merges across different vocabularies, for
mergekit's ``tokenizer`` table, and for pickled ``.bin`` inputs when they are allowed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from sakura_core.options import Options
from sakura_merge.config import MergeConfig, mergekit_dict, parse_size
from sakura_merge.contract import MergeCall, MergeMethod

# Every method mergekit 0.1.5 has that sakura has no native port of, with its parameters ({name: default}, shared
# or per model) so that configurations are checked before any work. tests/test_merge_methods.py checks this
# table against mergekit's own registry.

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
# Methods that draw random numbers (mergekit seeds them with --random-seed).
RANDOMIZED = ("della", "della_linear", "arcee_fusion")

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



class MergekitMethod(MergeMethod):
    """A method only mergekit implements: the merge runs through mergekit's executor (``run_mergekit``).

    One instance per name, its options model built from ``MERGEKIT_ONLY`` so that configurations are checked
    before any work, as for native methods.
    """

    native = False
    libraries = ("mergekit",)

    def __init__(self, name: str):
        from pydantic import Field, create_model

        spec = MERGEKIT_ONLY[name]
        fields: dict[str, Any] = {}
        for pname, default in {**spec["shared"], **spec["per_model"]}.items():
            kind = type(default) if default is not None else float
            key = pname if pname != "lambda" else "lambda_"
            doc = MERGEKIT_PARAMETER_DOCS.get(f"{name}.{pname}", MERGEKIT_PARAMETER_DOCS.get(pname))
            fields[key] = (Optional[kind], Field(default, alias=pname, description=doc) if pname == "lambda"
                           else Field(default, description=doc))
        self.Options = create_model(f"{name.title().replace('_', '')}Options", __base__=Options, **fields)
        self.per_model = tuple(spec["per_model"])
        self.per_model_scope = spec.get("scope", "all")
        self.required = tuple(spec.get("required", ()))
        self.base = spec["base"]
        self.min_models = spec["min"]
        self.max_models = spec["max"]
        self.randomized = name in RANDOMIZED
        self.description = f"the {name} method of mergekit"
        self.mergekit_name = name

    def run(self, call: MergeCall) -> Any:  # pragma: no cover - the executor never calls bridged methods
        raise RuntimeError("this method runs through mergekit's executor")


def run_mergekit(config: MergeConfig, paths: dict[str, str], out_dir: Path, device: str) -> dict[str, Any]:
    """Run mergekit's executor into ``out_dir`` (which must exist and be empty)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    data = mergekit_dict(config, {name: str(Path(p).resolve()) for name, p in paths.items()})
    merge_config = MergeConfiguration.model_validate(data)
    options = MergeOptions(
        device=device,
        cuda=device.startswith("cuda"),
        copy_tokenizer=True,
        write_model_card=False,  # the card writer asks the Hub about model paths (fails offline)
        lazy_unpickle=config.allow_bin,
        random_seed=config.seed,
        out_shard_size=parse_size(config.shard_size),
        safe_serialization=True,
        quiet=True,
    )
    logging.getLogger("mergekit").setLevel(logging.WARNING)
    run_merge(merge_config, str(out_dir), options=options)
    return {"engine": "mergekit"}

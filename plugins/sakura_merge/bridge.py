"""The mergekit bridge: the methods only mergekit implements, and handing a configuration to mergekit's
own executor.

Used for every method sakura has no native implementation of (della, breadcrumbs, sce, nuslerp, karcher,
arcee_fusion, multislerp, ...), for ``tokenizer_source`` merges across different vocabularies, for
mergekit's ``tokenizer`` table, and for pickled ``.bin`` inputs when they are allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from pydantic import model_validator

from sakura_core.errors import OptionError
from sakura_core.options import Options
from sakura_merge.config import MergeConfig, mergekit_dict, parse_size
from sakura_merge.contract import MergeCall, MergeMethod

# Every method mergekit 0.1.5 has that sakura has no native port of, with its parameters ({name: default}, shared
# or per model) and its input contract (base policy, inputs per slice, non-base inputs per slice) so that
# configurations are checked before any work. tests/test_merge_methods.py checks this table against mergekit's
# own registry.

_GTA_SHARED = {"int8_mask": False, "normalize": False, "rescale": False, "lambda": 1.0}
MERGEKIT_ONLY: dict[str, dict[str, Any]] = {
    "multislerp": {"base": "optional", "min": 1, "max": None, "non_base": (1, None),
                   "shared": {"normalize_weights": True, "eps": 1e-8},
                   "per_model": {"weight": None}, "scope": "non_base", "required": ("weight",)},
    "nearswap": {"base": "required", "min": 2, "max": 2, "shared": {"t": None}, "per_model": {}, "required": ("t",)},
    "ram": {"base": "required", "min": 1, "max": None, "shared": {"epsilon": 1e-5}, "per_model": {}},
    "ramplus_tl": {"base": "required", "min": 1, "max": None, "shared": {"r": 0.1, "alpha": 0.2, "epsilon": 1e-5},
                   "per_model": {}},
    "sce": {"base": "required", "min": 1, "max": None, "shared": {"int8_mask": False, "select_topk": 1.0},
            "per_model": {}},
    "nuslerp": {"base": "optional", "min": 1, "max": None, "non_base": (2, 2),
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
# Methods that draw random numbers (mergekit seeds them with --random-seed); arcee_fusion only for tensors of
# more than a million values (it samples them to estimate quantiles).
RANDOMIZED = ("della", "della_linear", "arcee_fusion")
# Methods whose per-model density and epsilon mergekit checks when it prunes a tensor (mid-merge).
DELLA = ("della", "della_linear")

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



class DellaOptions(Options):
    """mergekit's della pruning keeps entries with probabilities from density - epsilon to density + epsilon:
    with 0 < density < 1 both ends must lie strictly between 0 and 1 (mergekit fails mid-merge otherwise)."""

    @model_validator(mode="after")
    def _probabilities_in_range(self) -> "DellaOptions":
        problem = della_problem(getattr(self, "density", None), getattr(self, "epsilon", None))
        if problem:
            raise ValueError(problem)
        return self


def della_problem(density: Any, epsilon: Any) -> Optional[str]:
    """What is wrong with a model's della density and epsilon, as mergekit's ``della_magprune`` would fail."""
    if density is None or epsilon is None or not 0 < density < 1:
        return None  # density <= 0 prunes everything, >= 1 nothing: epsilon unused
    if density - epsilon <= 0 or density + epsilon >= 1:
        return f"density ± epsilon must lie strictly between 0 and 1 (density {density}, epsilon {epsilon})"
    return None


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
        base = DellaOptions if name in DELLA else Options
        self.Options = create_model(f"{name.title().replace('_', '')}Options", __base__=base, **fields)
        self.per_model = tuple(spec["per_model"])
        self.per_model_scope = spec.get("scope", "all")
        self.required = tuple(spec.get("required", ()))
        self.base = spec["base"]
        self.min_models = spec["min"]
        self.max_models = spec["max"]
        self.non_base = spec.get("non_base", (None, None))
        self.randomized = name in RANDOMIZED
        self.description = f"the {name} method of mergekit"
        self.mergekit_name = name

    def check(self, options: MergeConfig, env: Any) -> None:
        """mergekit's checks beyond the generic ones: non-base inputs per slice (when planning), della's
        epsilon (mid-merge: here only where density and epsilon hold for every tensor; the executor's
        per-tensor check covers filtered values before any tensor is read)."""
        self._check_non_base(options)
        if self.mergekit_name in DELLA:
            _check_della(options)

    def _check_non_base(self, options: MergeConfig) -> None:
        least, most = self.non_base
        if least is None and most is None:
            return
        for group in options.groups():
            for key, names, base in _slice_inputs(options, group):
                count = len([n for n in names if n != base])
                if count < (least or 0) or (most is not None and count > most):
                    wanted = f"exactly {least}" if least == most else f"at least {least}" if most is None else f"{least} to {most}"
                    raise OptionError(key, f"{self.mergekit_name} merges {wanted} models besides the base model, got {count}")

    def run(self, call: MergeCall) -> Any:  # pragma: no cover - the executor never calls bridged methods
        raise RuntimeError("this method runs through mergekit's executor")


def _slice_inputs(config: MergeConfig, group: Any) -> list[tuple[str, list[str], Optional[str]]]:
    """``(key, models, base)`` of each slice, ``models`` counting as one slice (with the base model added)."""
    if group.slices:
        return [(group.at(f"slices[{i}].sources"), [s.model for s in sl.sources], sl.base_model or config.base_model)
                for i, sl in enumerate(group.slices)]
    names = [m.model for m in group.models or []]
    if config.base_model and config.base_model not in names:
        names.append(config.base_model)
    return [(group.at("models"), names, config.base_model)]


def _check_della(config: MergeConfig) -> None:
    from sakura_merge.params import UNKNOWN, non_base_inputs, uniform_value

    defaults = MERGEKIT_ONLY["della"]["per_model"]
    for entry in non_base_inputs(config):
        for t in entry.depths:
            density, density_key = uniform_value("density", entry.scopes, t)
            epsilon, epsilon_key = uniform_value("epsilon", entry.scopes, t)
            if density is UNKNOWN or epsilon is UNKNOWN:
                continue
            density = defaults["density"] if density is None else density
            epsilon = defaults["epsilon"] if epsilon is None else epsilon
            problem = della_problem(_number(density), _number(epsilon))
            if problem:
                raise OptionError(epsilon_key or density_key or entry.key, f"{problem} for model {entry.model!r}")


def _number(value: Any) -> Optional[float]:
    """A checked parameter value as mergekit validates it (``"0.5"`` from YAML is 0.5)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """mergekit's and transformers' chatter silenced while their code runs for sakura (progress bars,
    deprecation notices, info logs): sakura reports its own progress and one-line errors."""
    import warnings

    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    logging.getLogger("mergekit").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def architecture_modules(model_dir: str, trust_remote_code: bool) -> list[str]:
    """The module names mergekit gives the architecture of the model in ``model_dir`` (``default`` for a
    single-module architecture, or one it has no definition of)."""
    from mergekit.architecture import arch_info_for_config
    from transformers import AutoConfig

    info = arch_info_for_config(AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code))
    return list(info.modules) if info is not None else ["default"]


def mergekit_task_order(config: MergeConfig, paths: dict[str, str]) -> list[str]:
    """The output tensors' names in the order mergekit's executor would compute them: its planner's tasks,
    scheduled as its ``Executor`` schedules them (nothing is read but the models' configs and tensor indexes)."""
    from mergekit.architecture import get_architecture_info
    from mergekit.config import MergeConfiguration
    from mergekit.graph import Executor
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import _model_out_config
    from mergekit.merge_methods.task_adapter import ExecuteMergeMethodTask
    from mergekit.options import MergeOptions
    from mergekit.plan import MergePlanner

    merge_config = MergeConfiguration.model_validate(mergekit_dict(config, {n: str(Path(p).resolve()) for n, p in paths.items()}))
    options = MergeOptions(allow_crimes=config.allow_crimes, trust_remote_code=config.trust_remote_code)
    with quiet_libraries():
        LoaderCache().setup(options=options)
        architecture = get_architecture_info(merge_config, options)
        out_config = _model_out_config(merge_config, architecture, trust_remote_code=config.trust_remote_code)
        planner = MergePlanner(merge_config, architecture, options=options, out_model_config=out_config)
        schedule = Executor(planner.plan_to_disk(out_path="unused")).schedule
    tasks = [handle.task() for handle in schedule.tasks]
    return [task.output_weight.name for task in tasks if isinstance(task, ExecuteMergeMethodTask)]


def run_mergekit(config: MergeConfig, paths: dict[str, str], out_dir: Path, device: str) -> dict[str, Any]:
    """Run mergekit's executor into ``out_dir`` (which must exist and be empty). ``paths``: every model reference
    to its directory (a ``MODEL+LORA`` reference to the model with its LoRA already applied)."""
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
        allow_crimes=config.allow_crimes,
        trust_remote_code=config.trust_remote_code,
        quiet=True,
    )
    with quiet_libraries():
        run_merge(merge_config, str(out_dir), options=options)
    return {"engine": "mergekit"}

"""Experiment trackers (trl's ``args.report_to``): sakura names each training run after its recipe and variant
and groups a recipe's runs, so a family of variants lands side by side in the tracker the user already uses.

- run name: ``recipe/variant`` (``recipe`` alone without variants), ``recipe`` being the recipe file's name
  without ``.toml``; ``args.run_name`` in the recipe wins.
- group: trackio's project (``args.project`` wins), ``WANDB_PROJECT`` and ``MLFLOW_EXPERIMENT_NAME`` (the
  environment wins), and for tensorboard the folder ``<store>/tensorboard/<recipe>/``: point
  ``tensorboard --logdir`` at it and every variant's run is there, one sub-folder per training
  (``<variant>/<fingerprint>``: a rerun with other settings is a run of its own).
- the training configuration trl resolved is logged by transformers' own callbacks; an eval stage of the
  trained model logs its results into the same run (trackio and tensorboard, ``log_eval_results``).

What a run used is recorded in the train stage's metrics (``tracking``), where the eval stage and the
model card find it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from sakura_core.errors import OptionError

# report_to name -> the module it needs (transformers' integrations import these)
TRACKER_MODULES = {"trackio": "trackio", "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow",
                   "comet_ml": "comet_ml", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab"}


def trackers(report_to: Any) -> list[str]:
    """``report_to`` as a list of tracker names ("none" and absent: none)."""
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    return [name for name in names if name != "none"]


def check_installed(report_to: Any) -> None:
    """Before any work: every tracker ``report_to`` names is installed (``"all"`` takes what is)."""
    for name in trackers(report_to):
        module = TRACKER_MODULES.get(name)
        if name == "tensorboard" and importlib.util.find_spec("tensorboardX") is not None:
            continue  # transformers writes events with tensorboardX too
        if module is not None and importlib.util.find_spec(module) is None:
            raise OptionError("args.report_to", f"asks for {name}, which is not installed (pip install {module})")


def run_identity(recipe_path: str, variant: str) -> tuple[str, str]:
    """(group, run name) of a recipe's training run: the recipe file's stem, and ``stem/variant``."""
    group = Path(recipe_path).stem
    return group, f"{group}/{variant}" if variant else group


def configure(values: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Name and group the run in each tracker ``values["report_to"]`` names (the recipe's own settings win);
    returns what the run used, for the stage's metrics (empty without trackers)."""
    names = trackers(values.get("report_to"))
    if not names:
        return {}
    group, run_name = run_identity(spec["recipe_path"], spec.get("variant", ""))
    run_name = values.setdefault("run_name", run_name)
    used: dict[str, Any] = {"report_to": names, "run_name": run_name, "group": group}
    if "trackio" in names or "all" in names:
        values.setdefault("project", group)
        space = values.get("trackio_space_id") or os.environ.get("TRACKIO_SPACE_ID")
        used["trackio"] = {"project": values["project"], "run": run_name, "space_id": space}
        if space:  # the dashboard: the run's one link (a local trackio has none)
            used["url"] = f"https://huggingface.co/spaces/{space}"
    if "wandb" in names or "all" in names:
        os.environ.setdefault("WANDB_PROJECT", group)
        used["wandb"] = {"project": os.environ["WANDB_PROJECT"], "run": run_name}
    if "mlflow" in names or "all" in names:
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", group)
        used["mlflow"] = {"experiment": os.environ["MLFLOW_EXPERIMENT_NAME"], "run": run_name}
    if "tensorboard" in names or "all" in names:
        where = Path(spec["store_root"]) / "tensorboard" / group / spec.get("variant", "") / spec["fingerprint"][:12]
        where.mkdir(parents=True, exist_ok=True)
        # transformers 5's TensorBoardCallback reads its folder from here (logging_dir is gone)
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(where)
        used["tensorboard"] = {"dir": str(where)}
    return used


def log_eval_results(tracking: dict[str, Any], scores: dict[str, float], step: int | None,
                     log: Any = print) -> list[str]:
    """Log an eval stage's scores into the training run ``tracking`` describes (the trained model's train
    metrics); returns the trackers written to. A tracker that is not installed here is said and skipped."""
    written = []
    if not scores:
        return written
    if "trackio" in tracking:
        if importlib.util.find_spec("trackio") is None:
            log("trackio is not installed here: the results are not logged to the training run")
        else:
            import trackio

            info = tracking["trackio"]
            # trackio replaces a run's config with the one its latest init gives: give the training's back
            trackio.init(project=info["project"], name=info["run"], space_id=info.get("space_id"), resume="allow",
                         embed=False, config=_trackio_config(info["project"], info["run"]))
            trackio.log(dict(scores), step=step)
            trackio.finish()
            written.append("trackio")
    if "tensorboard" in tracking:
        where = Path(tracking["tensorboard"]["dir"])
        writer_cls = _summary_writer()
        if writer_cls is None:
            log("tensorboard is not installed here: the results are not logged to the training run")
        elif where.is_dir():
            writer = writer_cls(log_dir=str(where))
            for name, value in scores.items():
                writer.add_scalar(name, value, global_step=step)
            writer.close()
            written.append("tensorboard")
    return written


def _trackio_config(project: str, run: str) -> dict[str, Any] | None:
    """The config the training logged to its trackio run, without trackio's own keys (``_Created``...)."""
    from trackio import Api

    for found in Api().runs(project):
        if found.name == run:
            return {k: v for k, v in (found.config or {}).items() if not k.startswith("_")}
    return None


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
    except ImportError:
        try:
            from tensorboardX import SummaryWriter  # type: ignore[no-redef]
        except ImportError:
            return None
    return SummaryWriter

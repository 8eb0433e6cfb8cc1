"""``evaluator = "lm-eval"``: EleutherAI's lm-evaluation-harness (``lm_eval.simple_evaluate``), unchanged.

The stage builds one ``HFLM`` over the model directory (on the GPU when there is one) and calls
``simple_evaluate`` with the recipe's settings: the numbers are lm-eval's own. A preset with different
few-shot settings per task (``openllm``) runs one ``simple_evaluate`` per few-shot setting on the same
loaded model. Task files beside the recipe (``task_files``) are lm-eval's ``include_path``; paths inside
them (``dataset_kwargs.data_files``) are relative to the recipe's directory, and their content is part of
the fingerprint. Task names are checked against a snapshot of lm-eval's tasks, so ``validate`` is fast.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from sakura_core.errors import OptionError, StageError, did_you_mean
from sakura_core.options import Options
from sakura_eval.contract import EvalJob, EvalResult, Evaluator

# The Open LLM Leaderboard (v1) the Sakura-SOLAR models were measured on: task -> few-shot examples.
OPENLLM = {"arc_challenge": 25, "hellaswag": 10, "mmlu": 5, "truthfulqa_mc2": 0, "winogrande": 5, "gsm8k": 5}
# The model-index names the leaderboard's cards use, and the Hub dataset each task reads.
OPENLLM_CARD = {
    "arc_challenge": ("AI2 Reasoning Challenge (25-Shot)", "ai2_arc", "ARC-Challenge", "test"),
    "hellaswag": ("HellaSwag (10-Shot)", "hellaswag", None, "validation"),
    "mmlu": ("MMLU (5-Shot)", "cais/mmlu", "all", "test"),
    "truthfulqa_mc2": ("TruthfulQA (0-shot)", "truthful_qa", "multiple_choice", "validation"),
    "winogrande": ("Winogrande (5-shot)", "winogrande", "winogrande_xl", "validation"),
    "gsm8k": ("GSM8k (5-shot)", "gsm8k", "main", "test"),
}
PRESETS: dict[str, dict[str, int | None]] = {
    "openllm": dict(OPENLLM),
    "leaderboard": {"leaderboard": None},  # lm-eval's Open LLM Leaderboard v2 group: its tasks set their own shots
}


class LmEvalOptions(Options):
    """Options of ``evaluator = "lm-eval"`` (lm-evaluation-harness's ``simple_evaluate``)."""

    tasks: list[str] = Field(default_factory=list)
    """lm-eval tasks or groups by name (``["arc_easy", "mmlu"]``), or defined in ``task_files``."""
    preset: Literal["openllm", "leaderboard"] | None = None
    """``openllm``: the Open LLM Leaderboard (v1) six, each with its few-shot setting (ARC 25, HellaSwag 10, MMLU 5,
    TruthfulQA mc2 0, Winogrande 5, GSM8K 5); ``leaderboard``: lm-eval's leaderboard (v2) group. Added to ``tasks``."""
    num_fewshot: int | None = Field(None, ge=0)
    """Few-shot examples for every task; unset: each task's own (a preset's per-task setting)."""
    limit: int | float | None = Field(None, gt=0)
    """At most this many documents per task (a number below 1: that fraction); unset: all. For quick checks,
    not for reported scores."""
    batch_size: int | Literal["auto"] = 8
    """Requests per forward pass (``auto``: lm-eval finds the largest that fits)."""
    apply_chat_template: bool = False
    """Format every prompt with the model's chat template (for instruct models); the model must have one."""
    fewshot_as_multiturn: bool | None = None
    """With ``apply_chat_template``: few-shot examples as alternating user/assistant turns; unset: the same as
    ``apply_chat_template``."""
    system_instruction: str | None = None
    """A system message put before every prompt."""
    gen_kwargs: dict[str, Any] | None = None
    """Generation settings for generation tasks (``{ max_gen_toks = 256 }``), over each task's own."""
    seed: int = 0
    """Seed of lm-eval's random choices (python, numpy, torch and the few-shot sampler)."""
    task_files: list[str] = Field(default_factory=list)
    """lm-eval task YAML files (or folders of them), relative to the recipe's directory: custom and offline
    tasks (lm-eval's ``include_path``). Their content and the local data files they read are part of the
    fingerprint; paths inside them are relative to the recipe's directory."""
    backend: Literal["hf", "vllm"] = "hf"
    """``hf`` (transformers) or ``vllm`` (needs the vllm package and a GPU)."""
    dtype: str = "auto"
    """dtype the model is loaded in (``auto``: its config's)."""
    max_length: int | None = Field(None, ge=1)
    """Longest sequence in tokens (context + continuation); unset: the model's."""

    @model_validator(mode="after")
    def _some_task(self) -> LmEvalOptions:
        if not self.tasks and self.preset is None:
            raise ValueError("name tasks (tasks = [\"arc_easy\"]) or a preset (preset = \"openllm\")")
        return self

    def task_fewshot(self) -> dict[str, int | None]:
        """Every task to run -> its few-shot setting (None: the task's own)."""
        wanted: dict[str, int | None] = dict(PRESETS[self.preset]) if self.preset else {}
        wanted.update({task: None for task in self.tasks if task not in wanted})
        if self.num_fewshot is not None:
            wanted = {task: self.num_fewshot for task in wanted}
        return wanted


class LmEval(Evaluator):
    """EleutherAI's lm-evaluation-harness: any task or group, presets for the Open LLM Leaderboards."""

    Options = LmEvalOptions
    libraries = ("lm-eval", "datasets")
    url = "https://github.com/EleutherAI/lm-evaluation-harness"

    def check(self, options: LmEvalOptions, env: Any) -> None:
        defined: set[str] = set()
        for i, _file in enumerate(options.task_files):
            for path in _task_yaml_files(env.recipe_dir, options.task_files[i], f"options.task_files[{i}]"):
                try:
                    defined.update(_names_in(path))
                except ValueError as exc:
                    raise OptionError(f"options.task_files[{i}]", str(exc)) from None
        from sakura_eval.tasks import known_names

        for i, task in enumerate(options.tasks):
            if task in defined:
                continue  # a task file's own: lm-eval's index (14,000 names) is not read
            known = known_names() | defined
            if task not in known:
                raise OptionError(f"options.tasks[{i}]", f"unknown lm-eval task {task!r}{did_you_mean(task, known)}"
                                  " (lm-eval's tasks, or one defined in task_files)")
        if options.backend == "vllm":
            import importlib.util

            if importlib.util.find_spec("vllm") is None:
                raise OptionError("options.backend", "backend = \"vllm\" needs the vllm package (pip install vllm) and a GPU")

    def external_inputs(self, options: LmEvalOptions, env: Any) -> dict[str, Any]:
        """lm-eval's version (its built-in task definitions) and the task files with their data, by content."""
        from importlib.metadata import version

        from sakura_core.hashing import hash_path

        files: dict[str, str] = {}
        for i, entry in enumerate(options.task_files):
            for path in _task_yaml_files(env.recipe_dir, entry, f"options.task_files[{i}]"):
                files[os.path.relpath(path, env.recipe_dir)] = hash_path(path)
                from sakura_eval.tasks import local_data_files, read_task_file

                for data in local_data_files(read_task_file(path), env.recipe_dir):
                    files[os.path.relpath(data, env.recipe_dir)] = hash_path(data)
        return {"lm_eval": version("lm-eval"), "task_files": files}

    def estimate(self, options: LmEvalOptions, config: dict[str, Any] | None, env: Any) -> Any:
        from sakura_eval.estimate import lm_eval_estimate

        return lm_eval_estimate(options, config)

    def run(self, job: EvalJob) -> EvalResult:
        import lm_eval
        from lm_eval.tasks import TaskManager

        options: LmEvalOptions = job.options
        # lm-eval's include_path takes folders: those of the named files (a folder's other tasks only add names)
        include = list(dict.fromkeys(str(p.parent) for i, entry in enumerate(options.task_files)
                                     for p in _task_yaml_files(job.recipe_dir, entry, f"options.task_files[{i}]")))
        multiturn = options.apply_chat_template if options.fewshot_as_multiturn is None else options.fewshot_as_multiturn
        label: list[str] = []  # the tasks of the simple_evaluate call running: what the progress bars say
        with quiet_lm_eval(), working_directory(job.recipe_dir), lm_eval_progress(job.progress, label):
            job.log("indexing lm-eval's tasks")
            manager = TaskManager(include_path=include or None)
            lm = load_lm(options, job)
            results: dict[str, Any] = {}
            for shots, tasks in _by_fewshot(options.task_fewshot()).items():
                label[:] = tasks
                try:
                    out = lm_eval.simple_evaluate(
                        model=lm, tasks=tasks, num_fewshot=shots, limit=options.limit, task_manager=manager,
                        apply_chat_template=options.apply_chat_template, fewshot_as_multiturn=multiturn,
                        system_instruction=options.system_instruction, gen_kwargs=options.gen_kwargs,
                        random_seed=options.seed, numpy_random_seed=options.seed, torch_random_seed=options.seed,
                        fewshot_random_seed=options.seed, log_samples=False,
                    )
                except (KeyError, ValueError, FileNotFoundError) as exc:
                    raise StageError(f"lm-eval could not run {', '.join(tasks)}: {type(exc).__name__}: {_first_line(exc)}") from None
                _merge(results, out)
        return EvalResult(
            results=flat_results(results.get("results", {})),
            settings={
                "num_fewshot": results.get("n-shot", {}), "limit": options.limit, "batch_size": options.batch_size,
                "apply_chat_template": options.apply_chat_template, "fewshot_as_multiturn": multiturn,
                "system_instruction": options.system_instruction, "gen_kwargs": options.gen_kwargs, "seed": options.seed,
                "backend": options.backend, "device": job.device, "dtype": options.dtype,
                "task_versions": results.get("versions", {}), "n_samples": results.get("n-samples", {}),
                "higher_is_better": results.get("higher_is_better", {}),
                "lm_eval": results.get("lm_eval_version"),
            },
            tasks=task_cards(results),
        )


def load_lm(options: LmEvalOptions, job: EvalJob) -> Any:
    """lm-eval's model over the model directory: ``HFLM`` (or ``VLLM``), on the job's device."""
    if options.backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=str(job.model.path), dtype=options.dtype, batch_size=options.batch_size,
                    max_length=options.max_length, seed=options.seed)
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(job.model.path), dtype=options.dtype, device=job.device, batch_size=options.batch_size,
                max_length=options.max_length)


def _by_fewshot(tasks: dict[str, int | None]) -> dict[int | None, list[str]]:
    """Tasks grouped by few-shot setting: one ``simple_evaluate`` each (its ``num_fewshot`` is global)."""
    groups: dict[int | None, list[str]] = {}
    for task, shots in tasks.items():
        groups.setdefault(shots, []).append(task)
    return groups


def _merge(into: dict[str, Any], out: dict[str, Any] | None) -> None:
    if not out:
        return
    for key in ("results", "n-shot", "versions", "n-samples", "configs", "higher_is_better"):
        into.setdefault(key, {}).update(out.get(key) or {})
    into["lm_eval_version"] = out.get("lm_eval_version")


def flat_results(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """lm-eval's ``{"acc,none": 0.5, "acc_stderr,none": 0.1}`` per task -> ``{"acc": 0.5, "acc_stderr": 0.1}``
    (a filter other than ``none`` stays in the name: ``exact_match,flexible-extract``)."""
    flat: dict[str, dict[str, float]] = {}
    for task, values in results.items():
        metrics = {}
        for key, value in values.items():
            if key in ("alias", "name", "sample_len") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric, _, filter_name = key.partition(",")
            name = metric if filter_name in ("", "none") else f"{metric},{filter_name}"
            metrics[name] = float(value)
        if metrics:
            flat[task] = metrics
    return flat


def task_cards(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the model card's model-index says of each task: the dataset it reads and the few-shot setting."""
    cards = {}
    for task, config in (results.get("configs") or {}).items():
        name, dataset, subset, split = OPENLLM_CARD.get(task, (task, None, None, None))
        cards[task] = {
            "name": name,
            "dataset": dataset or config.get("dataset_path"),
            "config": subset or config.get("dataset_name"),
            "split": split or config.get("test_split") or config.get("validation_split"),
            "num_fewshot": (results.get("n-shot") or {}).get(task, config.get("num_fewshot")),
        }
    return cards


def _task_yaml_files(recipe_dir: Path, entry: str, key: str) -> list[Path]:
    path = Path(entry).expanduser()
    path = path if path.is_absolute() else recipe_dir / path
    if path.is_dir():
        return sorted(p for p in path.rglob("*.yaml") if p.is_file())
    if not path.is_file():
        raise OptionError(key, f"no such task file or folder: {path}")
    return [path]


def _names_in(path: Path) -> list[str]:
    from sakura_eval.tasks import defined_names, read_task_file

    return defined_names(read_task_file(path))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def working_directory(path: Path) -> Any:
    """lm-eval reads a task file's relative data paths from the working directory: make it the recipe's."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def quiet_lm_eval() -> Any:
    """lm-eval logs every setting at INFO and warns about overrides it was asked for, and asks git for the
    working directory's commit (printing git's "fatal: not a git repository" outside one, and recording the
    recipe folder's commit as lm-eval's): keep the live view clean and the results honest."""
    import logging

    import lm_eval.evaluator as evaluator

    loggers = [logging.getLogger(name) for name in ("lm-eval", "lm_eval", "lm_eval.evaluator")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    git_hash = evaluator.get_git_commit_hash
    evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = git_hash
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def lm_eval_progress(progress: Any, tasks: list[str]) -> Any:
    """lm-eval's request loops drawn as sakura progress bars, named by the tasks whose requests they run
    (``arc_challenge: Running loglikelihood requests``): lm-eval batches the requests of one call's tasks
    together, and each few-shot setting of a preset is its own call."""
    import lm_eval.api.model as api_model
    import lm_eval.models.huggingface as hf

    bar = progress_bar_class(progress, tasks)
    saved = [(module, getattr(module, "tqdm", None)) for module in (hf, api_model)]
    for module, _ in saved:
        if hasattr(module, "tqdm"):
            module.tqdm = bar
    try:
        yield
    finally:
        for module, original in saved:
            if original is not None:
                module.tqdm = original


def progress_bar_class(progress: Any, tasks: list[str]) -> type:
    class ProgressBar:
        """The part of tqdm's interface lm-eval's models use, reporting to a sakura progress bar."""

        def __init__(self, iterable: Any = None, total: float | None = None, desc: str | None = None, **_: Any):
            self.iterable = iterable
            if total is None and iterable is not None and hasattr(iterable, "__len__"):
                total = len(iterable)
            what = (desc or "requests").strip(": ")
            self.task = progress(f"{', '.join(tasks)}: {what}" if tasks else what, total, "requests")

        def __iter__(self) -> Any:
            for item in self.iterable:
                yield item
                self.task.advance()
            self.close()

        def update(self, n: float = 1) -> None:
            self.task.advance(n)

        def set_description(self, *args: Any, **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            self.task.close()

        def __enter__(self) -> ProgressBar:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.close()

    return ProgressBar

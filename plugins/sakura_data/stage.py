"""The ``dataset`` stage kind: checks a recipe's dataset table without importing ``datasets``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sakura_core.errors import OptionError, PluginError, join_key
from sakura_core.options import validate_options
from sakura_core.stage import CheckEnv, StageContext, StageKind

from sakura_data.options import FILE_FORMATS, DatasetOptions, SourceOptions

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
SHA = re.compile(r"[0-9a-f]{40}")


def locate(source: SourceOptions, recipe_dir: Path) -> tuple[str, Path | None]:
    """``("local", path)`` for an existing file or directory, ``("hub", None)`` for a Hub id, else ``("missing", path)``."""
    path = Path(source.path).expanduser()
    full = path if path.is_absolute() else (recipe_dir / path)
    if full.exists():
        return "local", full.resolve()
    looks_local = source.path.startswith((".", "/", "~")) or Path(source.path).suffix.lower() in FILE_FORMATS
    if not looks_local and HUB_ID.match(source.path):
        return "hub", None
    return "missing", full


def is_saved_dataset(path: Path) -> bool:
    """A directory written by ``save_to_disk`` (read with ``load_from_disk``), not data files to load."""
    return (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()


class DatasetStage(StageKind):
    Options = DatasetOptions
    produces = "dataset"
    libraries = ("datasets", "pyarrow", "transformers", "tokenizers")


    def gpus(self, options: Any) -> int:
        return 0  # CPU work only
    def references(self, options: DatasetOptions) -> dict[str, str]:
        return {"tokenizer": options.tokenizer} if options.tokenizer else {}

    def check(self, options: DatasetOptions, env: CheckEnv) -> None:
        formats = set()
        for i, source in enumerate(options.sources):
            key = f"sources[{i}]"
            try:
                adapter = env.plugins.dataset_adapters.get(source.adapter)
            except PluginError as exc:
                raise OptionError(f"{key}.adapter", str(exc)) from None
            adapter_options = validate_options(adapter.Options, source.options, f"{key}.options")
            try:
                adapter.check(adapter_options, env)
            except OptionError as exc:
                raise OptionError(join_key(f"{key}.options", exc.key), exc.detail) from None
            formats.add(adapter.format)
            if source.format is not None and source.format not in set(FILE_FORMATS.values()):
                raise OptionError(f"{key}.format", f"unknown file format {source.format!r} (json, parquet, csv)")
            where, path = locate(source, env.recipe_dir)
            if where == "missing":
                raise OptionError(f"{key}.path", f"no such file or directory: {path}")
            if where == "local" and path.is_file() and source.format is None and path.suffix.lower() not in FILE_FORMATS:
                raise OptionError(
                    f"{key}.path", f"cannot tell the format of {path.name}: use .jsonl/.json/.parquet/.csv or set format"
                )
            check_data_files(source, key, where, path)
        if len(formats) > 1:
            raise OptionError("sources", "cannot mix preference adapters and SFT adapters in one dataset stage")

    def external_inputs(self, options: DatasetOptions, env: CheckEnv) -> dict[str, Any]:
        from sakura_core.hashing import hash_path

        found: dict[str, Any] = {}
        for i, source in enumerate(options.sources):
            where, path = locate(source, env.recipe_dir)
            if where == "local":
                found[f"sources[{i}]"] = {"content": hash_path(path)}
            elif where == "hub":
                found[f"sources[{i}]"] = {"hub": source.path, "revision": resolve_hub_revision(source)}
        return found

    def uses(self, options: DatasetOptions) -> list[tuple[str, str]]:
        return [("dataset_adapters", source.adapter) for source in options.sources]

    def estimate(self, options: DatasetOptions, inputs: dict[str, dict[str, Any]], env: CheckEnv) -> Any:
        """No sizes (the rows are not known before the run), but the longest row in tokens for the train
        stages downstream."""
        if not options.max_length:
            return None
        from sakura_core.estimate import Estimate

        return Estimate(output={"max_length": options.max_length})

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from sakura_data.build import build_dataset
        from sakura_data.memory import flat_memory

        with flat_memory():
            return build_dataset(ctx)


def check_data_files(source: SourceOptions, key: str, where: str, path: Path | None) -> None:
    """``data_dir`` / ``data_files`` choose files within a Hub dataset or a directory of data files only."""
    chosen = next((name for name in ("data_dir", "data_files") if getattr(source, name) is not None), None)
    if chosen is None or where != "local" or path is None:
        return
    if path.is_file():
        raise OptionError(f"{key}.{chosen}", f"{path.name} is a file: {chosen} chooses files in a Hub dataset or a directory")
    if is_saved_dataset(path):
        raise OptionError(f"{key}.{chosen}", f"{path.name} is a saved dataset (save_to_disk): {chosen} does not apply")


def resolve_hub_revision(source: SourceOptions) -> str | None:
    """The commit a Hub dataset's revision points to now, so a new upstream commit re-runs the stage.

    Asked of the Hub; offline, or when the Hub cannot be reached, read from the Hugging Face cache, where the
    stage left it when it loaded the dataset (not cached: a one-line error). A repo or revision the Hub does
    not know, or will not show this token: the revision as written, and the run says which source failed.
    """
    if source.revision and SHA.fullmatch(source.revision):
        return source.revision
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    from sakura_hub.cache import cached_commit
    from sakura_hub.timeouts import ensure as ensure_timeouts

    ensure_timeouts()  # the load that follows in the stage reuses this process's Hub client
    revision = source.revision or "main"
    if constants.HF_HUB_OFFLINE:
        return cached_commit("dataset", source.path, revision, why="HF_HUB_OFFLINE is set")
    try:
        return HfApi().dataset_info(source.path, revision=revision, timeout=10).sha or source.revision
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return source.revision
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            return source.revision
        return cached_commit("dataset", source.path, revision, why=f"the Hub answered HTTP {status}")
    except Exception as exc:  # noqa: BLE001 - connection errors: the cached commit, if there is one
        return cached_commit("dataset", source.path, revision,
                             why=f"the Hub at {constants.ENDPOINT} is unreachable ({type(exc).__name__})")

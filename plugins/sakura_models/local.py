"""Models from a local directory (safetensors weights, config.json, tokenizer files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sakura_core.errors import OptionError, StageError
from sakura_core.hashing import hash_path
from sakura_core.options import Options
from sakura_core.stage import CheckEnv, ModelSource, SourceEnv
from sakura_models import shapes


class LocalOptions(Options):
    """``"./dir"``, ``"/abs/dir"``, ``"~/dir"`` (or the name of an existing directory): a model directory on this
    machine, fingerprinted by the content of its files; checked when the recipe loads."""

    path: str
    """The model directory (``config.json``, weights, tokenizer files), relative to the recipe's directory;
    ``~`` is expanded."""
    allow_pickle: bool = False
    """Accept a directory whose only weights are pickled ``.bin`` / ``.pt`` / ``.pth`` files (loading a pickle
    can run code); safetensors are used whenever present."""


class LocalSource(ModelSource):
    Options = LocalOptions

    def parse(self, text: str) -> dict[str, Any]:
        return {"path": text}

    def claims(self, text: str, recipe_dir: Path) -> bool:
        """A path (``./``, ``/``, ``~``), or the name of a directory beside the recipe."""
        import os

        return text.startswith((".", "/", "~")) or (recipe_dir / os.path.expanduser(text)).is_dir()

    def resolve_path(self, options: LocalOptions, recipe_dir: Path) -> Path:
        path = Path(options.path).expanduser()
        return path if path.is_absolute() else (recipe_dir / path).resolve()

    def check(self, options: LocalOptions, env: CheckEnv) -> None:
        try:
            check_model_dir(self.resolve_path(options, env.recipe_dir), options.allow_pickle)
        except StageError as exc:
            raise OptionError(None, str(exc)) from None

    def fingerprint(self, options: LocalOptions, env: SourceEnv) -> tuple[str, dict[str, Any]]:
        path = self.resolve_path(options, env.recipe_dir)
        check_model_dir(path, options.allow_pickle)
        return hash_path(path), {"path": str(path)}

    def materialize(self, options: LocalOptions, env: SourceEnv, fingerprint: str) -> Path:
        return self.resolve_path(options, env.recipe_dir)

    def config(self, options: LocalOptions, env: SourceEnv, fingerprint: str) -> dict[str, Any] | None:
        import json

        try:
            data = json.loads((self.resolve_path(options, env.recipe_dir) / "config.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def footprint(self, config: dict[str, Any]) -> dict[str, int] | None:
        return shapes.footprint(config)


def check_model_dir(path: Path, allow_pickle: bool = False) -> None:
    """A model directory must exist, have a config.json and weights we are willing to load: the pickle check
    judges the files transformers will load (``weights.weights_to_load``), not any file that looks safe."""
    from sakura_models.consistency import disagreement, read_config, tensor_shapes
    from sakura_models.weights import weights_to_load

    if not path.is_dir():
        raise StageError(f"model directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise StageError(f"{path} has no config.json: not a transformers model directory")
    weights = weights_to_load(path)
    if weights is None:
        raise StageError(f"{path} has no weights transformers loads (model.safetensors, or an index and its shards)")
    if weights.pickled and not allow_pickle:
        stray = sorted(p.name for p in path.glob("*.safetensors"))
        what = (f"would load pickled weights ({weights.chosen}), not {stray[0]} (neither model.safetensors nor in an "
                "index: transformers ignores it)" if stray else f"has only pickled weights ({weights.chosen})")
        raise StageError(
            f"{path} {what}; they can run code when loaded. "
            "Convert them to safetensors, or set allow_pickle = true for this model"
        )
    missing = [name for name in weights.files if not (path / name).is_file()]
    if missing:
        raise StageError(f"{path}: {missing[0]} is listed in {weights.chosen} but missing")
    try:
        config = read_config(path)
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: {exc}") from None
    try:
        shapes = {} if weights.pickled else tensor_shapes([path / f for f in weights.files])
    except (OSError, ValueError):
        shapes = {}  # an unreadable weights file: the stage that reads it names it
    problem = disagreement(config, shapes)
    if problem:
        raise StageError(f"{path}: {problem}: the config does not describe these weights")

"""The publisher contract: what a ``publish`` stage hands a publisher, and what it gets back.

A publisher is registered with ``sakura_register_publishers(register)``: ``register("local", LocalPublisher())``.
It has a pydantic ``Options`` model (its keys sit flat in the publish stage's table, beside ``publisher``
and ``model``; a field named like one of the stage's own keys is refused) and a ``run(bundle, options, env)``
method that puts the bundle's files somewhere and returns a JSON-able record of where (path, repo url,
commit). The publish stage owns everything else: choosing the model files, writing the model card, the
lineage file and the recipe copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sakura_core.options import Options
from sakura_core.registry import Implementation
from sakura_core.stage import CheckEnv

# Files of a model artifact that are published (everything else, e.g. the store manifest, stays home).
CARD_FILE = "README.md"
LINEAGE_FILE = "sakura-lineage.json"
RECIPE_FILE = "sakura-recipe.toml"
RECORD_FILE = "published.json"
SKIPPED_FILES = {"sakura-artifact.json", CARD_FILE, LINEAGE_FILE, RECIPE_FILE, RECORD_FILE}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass
class Bundle:
    """What a publisher publishes."""

    name: str
    """A short name for messages: the recipe's name."""
    fingerprint: str
    """The fingerprint of the model artifact that is published."""
    files: dict[str, Path]
    """Path in the destination -> local file: weights, config, tokenizer, README.md (the model card),
    sakura-lineage.json and sakura-recipe.toml."""
    commit_message: str
    """A one-line message for a destination that records history (the Hub)."""
    commit_description: str = ""
    """A longer description to go with it."""

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.values())


@dataclass
class PublishEnv:
    """What a publisher may use while publishing."""

    recipe_dir: Path
    """The recipe's directory: relative paths in the options mean this one."""
    log: Callable[[str], None] = print
    """One line for the user (the live view, or the terminal under ``sakura push``)."""
    progress: Callable[..., Any] | None = None
    """``progress(description, total, unit)`` -> a progress bar, when run as a stage; None otherwise."""


class Publisher(Implementation):
    """Base class of publishers (``local``, ``hub``, ...)."""

    Options: ClassVar[type[Options]]

    def check(self, options: Any, env: CheckEnv) -> None:
        """Deeper checks before any work; raise ``OptionError(key, message)`` (key relative to the stage table)."""

    def external_inputs(self, options: Any, recipe_dir: Path) -> dict[str, Any]:
        """Fingerprint material outside the options (the absolute target folder, the Hub endpoint)."""
        return {}

    def load_reference(self, options: Any, recipe_dir: Path) -> str:
        """What to pass to ``from_pretrained`` to load the published model (shown in the card)."""
        raise NotImplementedError

    def run(self, bundle: Bundle, options: Any, env: PublishEnv) -> dict[str, Any]:
        """Publish ``bundle``; return where it went (``{"path": ...}`` or ``{"url", "commit", ...}``): it is
        stored as the stage's ``published.json``, remembered by the store against the model's fingerprint and
        shown in ``run --json``. Raise ``StageError`` for a failure the user can act on; leave nothing
        half-published."""
        raise NotImplementedError

    def outdated(self, record: dict[str, Any], options: Any) -> str | None:
        """Why the destination no longer holds what ``record`` (what ``run`` returned) says was published there
        (deleted, overwritten), in a few words, or None. The publish stage then runs again rather than stay
        cached. One cheap check; None when it cannot tell (offline)."""
        return None

    def hub_id(self, record: dict[str, Any]) -> str | None:
        """The Hub repo id of a model published with ``record``, when it is on the Hub this process talks to:
        the cards of the models made from it name it as their ``base_model``. None: not a Hub repo."""
        return None


def model_files(model_dir: Path) -> dict[str, Path]:
    """The files of a model artifact to publish: weights, config, tokenizer, chat template.

    Top-level files only (a train artifact's ``adapter/`` stays in the store); pickled weights are never
    published; the store manifest and any previous card are replaced by the publish stage's own.
    """
    files = {}
    for path in sorted(Path(model_dir).iterdir()):
        if not path.is_file() or path.name in SKIPPED_FILES or path.name.startswith("."):
            continue
        if path.suffix in PICKLE_SUFFIXES or path.name.endswith(".part"):
            continue
        files[path.name] = path
    return files

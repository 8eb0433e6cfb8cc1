"""The one error family a user sees.

Every mistake a user can make (a bad recipe, a missing model, a bad row, a refused token) is raised as a
``SakuraError``; the CLI prints its message as one line and exits with its ``exit_code``, no traceback.
Anything else is a bug in sakura or a plugin and is reported with a pointer to the full traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SakuraError(Exception):
    """A user-facing error: ``str(error)`` is the whole message, one line."""

    exit_code = 1


class RecipeError(SakuraError):
    """The recipe (or a CLI override of it) is wrong; raised before any work is done."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        self.detail = message
        prefix = "".join(f"{part}: " for part in (file, key) if part)
        super().__init__(prefix + message)


class OptionError(RecipeError):
    """Raised by plugins while checking their options; the core adds the file and stage prefix.

    ``key`` is relative to the table the plugin was given, e.g. ``args.learning_rate``.
    """

    def __init__(self, key: str | None, message: str):
        super().__init__(message, key=key)


class PluginError(SakuraError):
    """A plugin failed to load or registered something wrongly."""

    exit_code = 2


class StageError(SakuraError):
    """A stage could not do its work because of its input (bad rows, missing files, out of memory)."""

    exit_code = 1


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def join_key(*parts: object) -> str:
    """Join key-path parts the way a user writes them in TOML: ``stages.data.sources[0].path``."""
    out = ""
    for part in parts:
        if part is None or part == "":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out

"""sakura: a plugin-based engine that runs LLM-building recipes (merge, data, train, publish) from TOML."""

from typing import Any

from sakura_core.errors import OptionError, PluginError, RecipeError, SakuraError, StageError
from sakura_core.hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

__all__ = [
    "hookimpl", "hookspec", "Options", "SakuraError", "RecipeError", "OptionError", "PluginError", "StageError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Lazy: ``import sakura_core`` (every CLI start) does not import pydantic.
    if name == "Options":
        from sakura_core.options import Options

        return Options
    raise AttributeError(name)

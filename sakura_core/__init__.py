"""sakura: a plugin-based engine that runs LLM-building recipes (merge, data, train, publish) from TOML."""

from sakura_core.errors import OptionError, PluginError, RecipeError, SakuraError, StageError
from sakura_core.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "SakuraError", "RecipeError", "OptionError", "PluginError", "StageError", "__version__"]

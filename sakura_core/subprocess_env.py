"""The environment of every Python process sakura starts (launched trainers, their workers).

``python -m module`` and ``python -c`` put the working directory first on ``sys.path``, ahead of the standard
library: a ``json.py`` or ``torch.py`` where the user stands, or beside the recipe when they run from there,
would be imported and run by the worker. ``PYTHONSAFEPATH`` (Python 3.11+) leaves it off, and being in the
environment it holds for the processes those processes start too (accelerate's workers). Plugin files a
recipe names are loaded by path, so nothing sakura needs is lost.
"""

from __future__ import annotations

import os
import sys


def safe_python_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) for a child Python that imports nothing from its cwd."""
    env = dict(os.environ if base is None else base)
    env["PYTHONSAFEPATH"] = "1"
    return env


def safe_cwd(fallback: str) -> str | None:
    """The working directory for a child Python: unchanged (None) where ``PYTHONSAFEPATH`` works; on Python
    3.10, which ignores it, ``fallback``, a directory holding only what sakura wrote."""
    return None if sys.version_info >= (3, 11) else fallback

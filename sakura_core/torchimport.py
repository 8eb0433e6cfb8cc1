"""Importing torch without the garbage collector rescanning it.

``import torch`` creates several hundred thousand long-lived objects; while it runs, CPython's collector
makes a few full passes over all of them (0.2 s here), and afterwards every full pass keeps rescanning
them. Importing with the collector paused and then freezing what exists moves those objects out of its
reach for good. Measured on ``sakura merge`` of the 200M bench pair (2-core VM): 2.46-2.59 s against
2.89-3.30 s, five runs each, alternating.
"""

from __future__ import annotations

import gc
import sys
from typing import Any


def import_torch() -> Any:
    """``import torch``, the first time with the collector paused and everything then alive frozen
    (``gc.freeze``: a cycle of garbage made by the import is kept until exit, a bounded price)."""
    if "torch" in sys.modules:
        return sys.modules["torch"]
    enabled = gc.isenabled()
    gc.disable()
    try:
        import torch
    finally:
        if enabled:
            gc.enable()
    gc.freeze()
    return torch

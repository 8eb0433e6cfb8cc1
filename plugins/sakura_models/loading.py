"""Loading a model or tokenizer with transformers, refusals said in one line naming the model.

``trust_remote_code`` is always False here: sakura does not run a model's own Python code, and left unset
transformers asks on the terminal ("Do you wish to run the custom code? [y/N]") in the middle of a run. The
refusals a user acts on (a model that needs its own code, a pickle torch will not load, an architecture
this transformers does not know, missing files) become ``StageError`` lines naming the model; torch's and
transformers' own messages run to several lines.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError


def from_pretrained(cls: Any, path: str | Path, name: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(path, **kwargs)`` (``AutoModelForCausalLM``, ``AutoTokenizer``) for model ``name``."""
    what = "tokenizer" if "Tokenizer" in getattr(cls, "__name__", "") else "model"
    try:
        return cls.from_pretrained(str(path), trust_remote_code=False, **kwargs)
    except (pickle.UnpicklingError, ValueError, OSError) as exc:
        text = str(exc)
        if "trust_remote_code" in text or "custom code" in text:
            why = "it needs Python code of its own (auto_map in config.json), which sakura does not run"
        else:
            why = refusal_reason(exc)
        raise StageError(f"cannot load the {what} of {name} ({path}): {why}") from None


def refusal_reason(exc: BaseException) -> str:
    """``Type: line`` for a library's refusal: the line that says why, else the first. torch's weights_only
    refusal opens with a paragraph about torch 2.6's defaults and names what it blocked lines later
    ("Trying to load unsupported GLOBAL posix.system whose module posix is blocked.")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    why = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
    return f"{type(exc).__name__}: {why}"

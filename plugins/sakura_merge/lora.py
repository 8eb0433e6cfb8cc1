"""``MODEL+LORA``: a LoRA adapter applied to a model before merging, by mergekit's own code.

mergekit's ``ModelReference.merged`` loads the model, applies the adapter with PEFT (``merge_and_unload``) and
saves the result under its LoRA cache, named by the model and LoRA paths. sakura calls that same function, so
the merged inputs are mergekit's bit for bit; the merge itself then runs on whichever executor fits. Without a
cache directory (mergekit requires ``--lora-merge-cache``), the models with their LoRA live in a temporary
directory removed after the merge.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from sakura_merge.config import MergeConfig, model_references, split_reference
from sakura_merge.errors import MergeInputError


@contextmanager
def weight_directories(
    config: MergeConfig,
    paths: dict[str, str],
    loras: dict[str, str],
    cache: Optional[Path],
    scratch: Optional[Path],
    log: Callable[[str], None],
) -> Iterator[dict[str, str]]:
    """``{reference: directory of its weights}`` for every model reference of the configuration: the model's
    own directory (``paths``, by model name), or for ``MODEL+LORA`` the model with the LoRA (``loras``: its
    directory by the text after ``+``) applied, under ``cache`` or else a temporary directory (in ``scratch``)."""
    references = set(model_references(config).values())
    with_lora = sorted(r for r in references if split_reference(r)[1] is not None)
    found = {r: paths[r] for r in references if r not in with_lora}
    if not with_lora:
        yield found
        return
    with tempfile.TemporaryDirectory(prefix="sakura-lora-", dir=scratch) as tmp:
        directory = cache or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for reference in with_lora:
            model, lora = split_reference(reference)
            log(f"applying LoRA {lora} to {model}")
            found[reference] = apply_lora(paths[model], loras[lora], directory, config.trust_remote_code)
        yield found


def apply_lora(model_dir: str, lora_dir: str, cache: Path, trust_remote_code: bool) -> str:
    """The directory of ``model_dir`` with the LoRA in ``lora_dir`` merged into its weights (mergekit's
    ``ModelReference.merged``: reused when the cache already has it)."""
    from mergekit.common import ModelPath, ModelReference

    from sakura_merge.bridge import quiet_libraries

    reference = ModelReference(model=ModelPath(path=model_dir), lora=ModelPath(path=lora_dir))
    try:
        with quiet_libraries():
            merged = reference.merged(cache_dir=str(cache), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise MergeInputError(f"LoRA {lora_dir}: cannot apply it to {model_dir}: {' '.join(str(exc).split())}") from None
    return merged.model.path

"""sakura's additions to the trl trainer: the ``SakuraTrainer`` subclass and the reference-hash patch."""

from __future__ import annotations

import time
from typing import Any

from sakura_core.errors import StageError
from sakura_trl.config import resolve


def trainer_class(trainer_def: Any, cache: Any) -> type:
    base = resolve(trainer_def.trainer_class)

    class SakuraTrainer(base):  # type: ignore[misc, valid-type]
        """trl's trainer, plus: one clear line for unusable data, the reference cache (DPO), LoRA on lm_head."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            from sakura_trl.lora_head import lora_head_allowed, route_head_through_adapter

            with lora_head_allowed(base):
                super().__init__(*args, **kwargs)
            route_head_through_adapter(self.model)

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, *rest: Any, **kwargs: Any) -> Any:
            out = super()._prepare_dataset(dataset, processing_class, args, *rest, **kwargs)
            if hasattr(out, "__len__") and len(out) == 0 and len(dataset) > 0:
                raise StageError(
                    f"every row was dropped while tokenizing: the prompts are longer than args.max_length "
                    f"({args.max_length}); raise max_length or shorten the prompts"
                )
            return out

        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            if cache is None:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            found = cache.load(name, dataset)
            if found is not None:
                return found
            started = time.perf_counter()
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            cache.ref_seconds += time.perf_counter() - started
            cache.save(name, out)
            return out

    return SakuraTrainer


class reference_hash:
    """trl hashes every reference weight to name its own datasets cache file; sakura's cache key already
    identifies the reference (the input model's content digest), so use it and skip a pass over the weights."""

    def __init__(self, cache: Any):
        self.cache = cache
        self.saved = None

    def __enter__(self) -> None:
        if self.cache is not None:
            import trl.trainer.dpo_trainer as dpo

            self.saved = dpo.hash_module
            dpo.hash_module = lambda module: self.cache.key

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            import trl.trainer.dpo_trainer as dpo

            dpo.hash_module = self.saved


def quiet(trainer: Any) -> None:
    """Drop transformers' own printing callbacks: sakura shows progress and metrics itself."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)

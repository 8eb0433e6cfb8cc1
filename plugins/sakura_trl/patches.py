"""sakura's additions to the trl trainer: the ``SakuraTrainer`` subclass and the reference-hash patch."""

from __future__ import annotations

import time
from typing import Any

from sakura_core.errors import StageError
from sakura_trl.config import resolve


def trainer_class(trainer_def: Any, cache: Any, report: Any) -> type:
    base = resolve(trainer_def.trainer_class)

    class SakuraTrainer(base):  # type: ignore[misc, valid-type]
        """trl's trainer, plus: one clear line for unusable data, the reference cache (DPO) and the progress of
        its pass, LoRA on lm_head."""

        _ref_pairs: int | None = None  # pairs through the reference pass so far, while one runs

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
            found = cache.load(name, dataset) if cache is not None else None
            if found is not None:
                return found
            started = time.perf_counter()
            # trl's own bar is off (sakura's view shows progress): the pass, minutes on a large model, gets one
            report.start(f"reference log-probs ({name})", len(dataset), unit="pairs")
            self._ref_pairs = 0
            try:
                out = super()._precompute_ref_logps(dataset, name, batch_size)
            finally:
                self._ref_pairs = None
                report.finish()
            if cache is not None:
                cache.ref_seconds += time.perf_counter() - started
                cache.save(name, out)
            return out

        def compute_ref_log_probs(self, model: Any, inputs: Any) -> Any:
            out = super().compute_ref_log_probs(model, inputs)
            if self._ref_pairs is not None:  # in the reference pass: every process does a batch at a time
                self._ref_pairs += len(out[0]) * self.accelerator.num_processes
                report.step(self._ref_pairs)
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

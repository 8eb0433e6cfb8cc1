"""Reference log-prob cache: computed once per (reference model, dataset, tokenization), kept in the store.

The cache is an artifact of its own in the store (``artifacts/<key>/``, manifest kind ``ref-logprobs``),
written atomically through ``sakura_core.store.Store``. Its key hashes what the reference model and the
dataset hold, their content digests (a forced rebuild can replace an artifact under the same fingerprint
with other bytes, and the old log-probs must not serve the new rows), the split, and every setting that
changes the tokenized rows or the reference numbers: chat template, max_length, truncation mode, ld_alpha,
dtype / quantization / mixed precision, trl version. Learning rate, beta, loss type, LoRA rank... are not in
it, so a re-run with other hyperparameters, another DPO stage or another recipe on the same model and data
reuses it without a reference forward pass. With LoRA the reference is the input model itself.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

CACHE_VERSION = 2  # 2: keyed on the inputs' content digests, not their fingerprints


class RefCache:
    def __init__(self, store_root: Path, key: str, material: dict[str, Any], kept_with: list[str]):
        from sakura_core.store import Store

        self.store = Store(store_root)
        self.key = key
        self.material = material
        self.kept_with = kept_with  # the fingerprints of the model and dataset it was computed from
        self.hits: list[str] = []
        self.misses: list[str] = []
        self.ref_seconds = 0.0

    @classmethod
    def for_run(cls, spec: dict[str, Any], options: Any, args: Any, tokenizer: Any, model: Any) -> RefCache:
        import trl

        from sakura_core.hashing import hash_json

        quantize = options.lora.quantize if options.lora is not None else None
        material = {
            "version": CACHE_VERSION,
            "trl": trl.__version__,
            "reference_model": spec["model_digest"],
            "dataset": spec["dataset_digest"],
            "splits": [options.train_split, options.eval_split],
            "chat_template": tokenizer.chat_template,
            "max_length": args.max_length,
            "truncation_mode": args.truncation_mode,
            "ld_alpha": args.ld_alpha,
            "dtype": str(model.dtype),
            "quantize": quantize,
            "bf16": bool(args.bf16),
            "fp16": bool(args.fp16),
        }
        kept_with = [spec["model_fingerprint"], spec["dataset_fingerprint"]]
        return cls(Path(spec["store_root"]), "ref-" + hash_json(material), material, kept_with)

    def _file(self, root: Path, name: str) -> Path:
        return root / f"{name}.safetensors"

    def load(self, name: str, dataset: Any) -> Any | None:
        """The dataset with ``ref_chosen_logps`` / ``ref_rejected_logps`` columns, or None on a miss."""
        self.store.locks.use(self.key)  # gc leaves it while this run reads it
        artifact = self.store.lookup(self.key)
        if artifact is None or not self._file(artifact.path, name).is_file():
            return None
        from safetensors.torch import load_file

        tensors = load_file(str(self._file(artifact.path, name)))
        chosen, rejected = tensors["ref_chosen_logps"], tensors["ref_rejected_logps"]
        if len(chosen) != len(dataset):
            return None  # tokenization filtered differently: recompute rather than misalign
        self.hits.append(name)
        dataset = dataset.add_column("ref_chosen_logps", chosen.tolist())
        return dataset.add_column("ref_rejected_logps", rejected.tolist())

    def save(self, name: str, dataset: Any) -> None:
        """Store the reference columns of ``dataset`` (merging with splits stored before)."""
        import torch
        from safetensors.torch import save_file

        self.misses.append(name)
        if not _is_main_process():
            return
        # under the cache's build lock: two trainings sharing it merge their splits instead of losing one
        with self.store.locks.building(self.key):
            tmp = self.store.begin(self.key)
            try:
                old = self.store.lookup(self.key)
                if old is not None:
                    for path in old.path.glob("*.safetensors"):
                        if path.stem != name:
                            (tmp / path.name).write_bytes(path.read_bytes())
                save_file(
                    {
                        "ref_chosen_logps": torch.tensor(dataset["ref_chosen_logps"], dtype=torch.float32),
                        "ref_rejected_logps": torch.tensor(dataset["ref_rejected_logps"], dtype=torch.float32),
                    },
                    str(self._file(tmp, name)),
                )
                manifest = {
                    "kind": "ref-logprobs",
                    "produces": "reference log-probs",
                    "fingerprint": self.key,
                    "key": self.material,
                    # sakura cache gc keeps this cache while the model and dataset it was computed from are kept
                    "kept_with": self.kept_with,
                    "rows": {p.stem: None for p in tmp.glob("*.safetensors")},
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                self.store.commit(tmp, self.key, manifest)
            except BaseException:
                self.store.abort(tmp)
                raise

    def summary(self) -> dict[str, Any]:
        return {
            "ref_cache": self.key,
            "ref_cache_hit": bool(self.hits) and not self.misses,
            "ref_forward_splits": list(self.misses),
            "ref_pass_seconds": round(self.ref_seconds, 3),
        }


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process

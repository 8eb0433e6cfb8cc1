"""The mergekit bridge: hand the configuration to mergekit's own executor.

Used for every method sakura has no native implementation of (della, breadcrumbs, sce, nuslerp, karcher,
arcee_fusion, multislerp, ...), for ``tokenizer_source`` merges across different vocabularies, for
mergekit's ``tokenizer`` table, and for pickled ``.bin`` inputs when they are allowed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sakura_merge.config import MergeConfig, mergekit_dict, parse_size


def run_mergekit(config: MergeConfig, paths: dict[str, str], out_dir: Path, device: str) -> dict[str, Any]:
    """Run mergekit's executor into ``out_dir`` (which must exist and be empty)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    data = mergekit_dict(config, {name: str(Path(p).resolve()) for name, p in paths.items()})
    merge_config = MergeConfiguration.model_validate(data)
    options = MergeOptions(
        device=device,
        cuda=device.startswith("cuda"),
        copy_tokenizer=True,
        write_model_card=False,  # the card writer asks the Hub about model paths (fails offline)
        lazy_unpickle=config.allow_bin,
        random_seed=config.seed,
        out_shard_size=parse_size(config.shard_size),
        safe_serialization=True,
        quiet=True,
    )
    logging.getLogger("mergekit").setLevel(logging.WARNING)
    run_merge(merge_config, str(out_dir), options=options)
    return {"engine": "mergekit"}

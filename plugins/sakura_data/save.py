"""Writing the prepared splits in ``Dataset.save_to_disk``'s layout, appending one table at a time.

``save_to_disk`` on a shuffled selection gathers rows at random from memory-mapped tables, and every page
it touches stays resident: the process grows by the size of the data. Rows arrive here already in their
final order, so each split is a single sequential write; ``datasets.load_from_disk`` reads the result.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

FILENAME = "data-00000-of-00001.arrow"


class SplitWriter:
    """The first ``sizes[first]`` rows written go to the first split, the next to the second, and so on."""

    def __init__(self, out: Path, sizes: dict[str, int], features: Any):
        from datasets.arrow_writer import ArrowWriter

        self.out, self.sizes = out, {name: n for name, n in sizes.items() if n}
        out.mkdir(parents=True)
        self.writers = {}
        for name in self.sizes:
            (out / name).mkdir()
            self.writers[name] = ArrowWriter(features=features, path=str(out / name / FILENAME))
        self.names = list(self.sizes)
        self.current, self.left = 0, self.sizes[self.names[0]]

    def write(self, table: Any) -> None:
        offset = 0
        while offset < table.num_rows:
            n = min(self.left, table.num_rows - offset)
            self.writers[self.names[self.current]].write_table(table.slice(offset, n).replace_schema_metadata(None))
            offset += n
            self.left -= n
            if self.left == 0 and self.current + 1 < len(self.names):
                self.current += 1
                self.left = self.sizes[self.names[self.current]]

    def close(self) -> None:
        import datasets

        for name, writer in self.writers.items():
            writer.finalize()
            writer.close()
            written = datasets.Dataset.from_file(str(self.out / name / FILENAME))
            state = {
                key: written.__dict__[key]
                for key in ("_fingerprint", "_format_columns", "_format_kwargs", "_format_type", "_output_all_columns")
            }
            state.update(_split=None, _data_files=[{"filename": FILENAME}])
            split_dir = self.out / name
            (split_dir / datasets.config.DATASET_STATE_JSON_FILENAME).write_text(json.dumps(state, indent=2, sort_keys=True))
            info = dataclasses.asdict(written._info)
            (split_dir / datasets.config.DATASET_INFO_FILENAME).write_text(json.dumps(dict(sorted(info.items())), indent=2))
            del written
        splits = sorted(self.sizes, key=lambda name: name != "train")  # train first, as save_to_disk lists it
        (self.out / datasets.config.DATASETDICT_JSON_FILENAME).write_text(json.dumps({"splits": splits}))

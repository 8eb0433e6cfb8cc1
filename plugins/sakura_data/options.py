"""Options of the ``dataset`` stage kind (the stage's TOML table)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator

from sakura_core.stage import Options

SOURCE_FIELDS = ("adapter", "path", "split", "subset", "revision", "format", "weight", "max_rows")
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class SourceOptions(Options):
    """One source of a dataset stage. Keys other than these are the adapter's own options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    adapter: str
    path: str  # local file (jsonl/json/parquet/csv), saved datasets directory, or Hub dataset id
    split: str = "train"  # for Hub ids and saved DatasetDicts
    subset: str | None = None  # Hub config name ("name" in datasets.load_dataset)
    revision: str | None = None  # Hub branch, tag or commit
    format: str | None = None  # json / parquet / csv; default from the file extension
    weight: float | None = Field(None, gt=0)  # rows kept = weight * rows after filtering (>1 repeats rows)
    max_rows: int | None = Field(None, ge=1)  # sample cap (seeded), applied after filtering

    @model_validator(mode="after")
    def _one_of_weight_cap(self) -> SourceOptions:
        if self.weight is not None and self.max_rows is not None:
            raise ValueError("set either weight or max_rows for a source, not both")
        return self

    def adapter_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DatasetOptions(Options):
    sources: list[SourceOptions] = Field(min_length=1)
    tokenizer: str | None = None  # model alias or stage whose tokenizer + chat template count tokens
    max_length: int | None = Field(None, ge=1)  # prompt + longest answer, in tokens
    max_prompt_length: int | None = Field(None, ge=1)  # prompt (chat template + generation prompt), in tokens
    dedup: bool = True  # drop rows whose normalized prompt was seen before (earlier sources win)
    shuffle: bool = True
    seed: int = 42
    test_size: float | int | None = None  # fraction (0 < x < 1) or row count of a "test" split
    num_proc: int | None = None  # worker processes for map (default: min(2, cpus); 1 for small sources)
    batch_size: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DatasetOptions:
        if (self.max_length or self.max_prompt_length) and not self.tokenizer:
            raise ValueError("max_length / max_prompt_length count tokens: set tokenizer = \"<model or stage>\"")
        if isinstance(self.test_size, float) and not 0 < self.test_size < 1:
            raise ValueError("test_size is a fraction between 0 and 1, or a row count")
        if isinstance(self.test_size, int) and self.test_size < 1:
            raise ValueError("test_size as a row count must be at least 1")
        return self

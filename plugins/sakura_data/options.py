"""Options of the ``dataset`` stage kind (the stage's TOML table)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from sakura_core.options import Options

FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class SourceOptions(Options):
    """One source of a dataset stage: where its rows are and which adapter maps them."""

    unknown_key_hint: ClassVar[str] = "an adapter's own options go in the source's options table: options = { key = value }"

    adapter: str
    """Dataset adapter that maps this source's rows to trl's conversational format (see Dataset adapters);
    the sources of one stage are all preference data or all SFT data."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The adapter's own options (see its entry under Dataset adapters), in their own table so that no adapter
    option can shadow a source key: ``options = { system = false }``."""
    path: str
    """A local ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` file or a dataset directory, relative to the
    recipe's directory, or else a Hub dataset id (``org/name``)."""
    split: str = "train"
    """Split to read from a Hub dataset, a saved ``DatasetDict`` or a dataset directory (a single file is read
    whole)."""
    subset: str | None = None
    """Configuration of a Hub dataset (``name`` in ``datasets.load_dataset``)."""
    data_dir: str | None = None
    """Folder of a Hub dataset or a dataset directory to read the data files from (``data_dir`` in
    ``datasets.load_dataset``), e.g. ``"preference"`` for HelpSteer2's preference data."""
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    """Data files of a Hub dataset or a dataset directory to read (``data_files`` in ``datasets.load_dataset``):
    a path or glob pattern, a list of them, or a table of split to path(s) (``{ train = "train-*.jsonl" }``);
    relative to the dataset, or to ``data_dir`` when set."""
    revision: str | None = None
    """Branch, tag or commit of a Hub dataset; unset: its default branch. The commit it points to is part of
    the fingerprint, so a new upstream commit re-runs the stage."""
    format: str | None = None
    """File format, ``json``, ``parquet`` or ``csv``, for a file whose extension does not tell it; unset: from
    the extension (``.jsonl`` and ``.json`` are JSON)."""
    weight: float | None = Field(None, gt=0)
    """Rows taken from this source: weight × its rows left after filtering and deduplication, sampled with the
    stage's ``seed`` (above 1 repeats rows); not with ``max_rows``."""
    max_rows: int | None = Field(None, ge=1)
    """Take at most this many of the source's rows left after filtering and deduplication, sampled with the
    stage's ``seed``; not with ``weight``."""

    @field_validator("data_files", mode="before")
    @classmethod
    def _paths_or_splits(cls, value: Any) -> Any:
        # checked before pydantic tries each member of the union, whose errors would name a member ("str")
        def paths(v: Any) -> bool:
            return isinstance(v, str) or (isinstance(v, list) and all(isinstance(p, str) for p in v))

        if value is None or paths(value) or (isinstance(value, dict) and all(paths(v) for v in value.values())):
            return value
        raise ValueError("data_files is a path or glob pattern, a list of them, or a table of split = path(s)")

    @model_validator(mode="after")
    def _one_of_weight_cap(self) -> SourceOptions:
        if self.weight is not None and self.max_rows is not None:
            raise ValueError("set either weight or max_rows for a source, not both")
        return self



class DatasetOptions(Options):
    """``kind = "dataset"``: reads its sources, maps every row to trl's conversational format with the source's
    adapter, drops rows over the token limits and repeated prompts, mixes, shuffles and splits; the artifact is
    a ``datasets`` DatasetDict plus ``stats.json`` (rows read, made by the adapter and kept per source, and why
    rows were dropped)."""

    sources: list[SourceOptions] = Field(min_length=1)
    """The data to read, in order: a table per source with the keys below plus its adapter's options."""
    tokenizer: str | None = None
    """Model alias or stage whose tokenizer and chat template count tokens for ``max_length`` and
    ``max_prompt_length`` (required with either)."""
    max_length: int | None = Field(None, ge=1)
    """Drop rows longer than this, in tokens of the ``tokenizer`` model's chat template: the prompt plus the
    longer answer (SFT: the whole conversation). It only filters: set the train stage's ``args.max_length``
    for the trainer."""
    max_prompt_length: int | None = Field(None, ge=1)
    """Drop preference rows whose prompt, with the chat template's generation prompt, is longer than this many
    tokens (SFT rows are not checked)."""
    dedup: bool = True
    """Drop rows whose prompt (case and whitespace folded; SFT: the messages before the first answer) came
    earlier, in this source or an earlier one; the rows an adapter made from one source row or group share
    its prompt and are not duplicates of each other."""
    shuffle: bool = True
    """Shuffle the mixed rows with ``seed``; ``false`` keeps the sources' order (and the test split is then
    the first rows)."""
    seed: int = 42
    """Seed for shuffling and for sampling rows by ``weight`` or ``max_rows``."""
    test_size: float | int | None = None
    """Size of a ``test`` split taken from the mixed rows: a fraction (``0.1``) or a number of rows (``500``);
    unset: only a ``train`` split."""
    num_proc: int | None = Field(None, ge=1, le=512)
    """Worker processes that map a source's rows; unset: 2 (at most the CPU count) for a source of 20,000 rows
    or more, else 1."""
    batch_size: int = Field(1000, ge=1)
    """Rows per batch when mapping and counting tokens (memory against speed; the result is the same); a batch
    is longer when it must hold a whole group of an adapter's ``group_by``."""

    @model_validator(mode="after")
    def _check(self) -> DatasetOptions:
        if (self.max_length or self.max_prompt_length) and not self.tokenizer:
            raise ValueError("max_length / max_prompt_length count tokens: set tokenizer = \"<model or stage>\"")
        if isinstance(self.test_size, float) and not 0 < self.test_size < 1:
            raise ValueError("test_size is a fraction between 0 and 1, or a row count")
        if isinstance(self.test_size, int) and self.test_size < 1:
            raise ValueError("test_size as a row count must be at least 1")
        return self

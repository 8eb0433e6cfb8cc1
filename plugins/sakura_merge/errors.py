"""Merge-specific errors."""

from sakura_core.errors import StageError


class MergeInputError(StageError):
    """The models do not fit the configuration (missing path, shapes, layer range): a user mistake, exit 2."""

    exit_code = 2

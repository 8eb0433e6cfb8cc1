"""The dataset-adapter contract: what an adapter receives, what it may return, and how it drops rows.

An adapter maps a source's rows to sakura's canonical rows, the format trl consumes:

* preference rows: ``prompt`` = messages (optional system, then user), ``chosen`` / ``rejected`` = the
  answer messages (one assistant message each, usually);
* SFT rows: ``messages`` = the whole conversation.

``run(row, options)`` gets one source row (a dict of the columns it asked for) and returns a canonical row,
or any iterable of them (a list, a generator): zero rows drop the source row, several expand it (all the
pairs of one prompt's rated answers). ``raise Skip("reason")`` drops the row with a reason counted in the
dataset's ``stats.json``. A value of the wrong type (``text(value, column)`` and ``preference`` check) raises
``WrongType``: the stage stops with one line naming the source and the row. With ``group_by``, consecutive rows that agree on those columns reach ``run`` together,
as a list (HelpSteer2's two rated responses per prompt, say). Any other exception stops the stage with one
line naming the source and the row, and the traceback in a log file.

A new adapter is a subclass registered from a plugin's ``sakura_register_dataset_adapters`` hook::

    class MyAdapter(Adapter):
        columns = ("instruction", "good", "bad")

        def run(self, row, options):
            return preference(row["instruction"], row["good"], row["bad"])

This module is imported by ``sakura validate``: it must stay cheap (pydantic only, no datasets).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union

from sakura_core.options import NoOptions
from sakura_core.registry import Implementation

if TYPE_CHECKING:  # pragma: no cover
    from sakura_core.stage import CheckEnv

Row = dict[str, Any]
Result = Union[Row, Iterable[Row], None]


class Skip(Exception):
    """Raised by ``Adapter.run`` to drop a row (or a group); the message is the reason counted in stats.json."""


class WrongType(Exception):
    """A row holds a value of the wrong type (a list, an object or a number where text is expected): the stage
    stops with one line naming the source and the row. Writing ``str(value)`` instead would put ``['a', 'b']``
    in the dataset without a word; the file is not the layout the adapter reads, or the row is broken."""


class Adapter(Implementation):
    """A dataset adapter: the columns it reads, the rows it makes.

    Null or empty required fields are dropped (and counted) before ``run`` is called; canonical rows with an
    empty message are dropped after. ``Options`` validates the adapter's own keys, given in the source's
    ``options`` table.
    """

    Options: ClassVar[Any] = NoOptions
    format: ClassVar[Literal["preference", "sft"]] = "preference"
    """The rows it makes: ``preference`` (prompt, chosen, rejected) or ``sft`` (messages); a dataset stage's
    sources all make one format."""
    columns: ClassVar[tuple[str, ...]] = ()
    """Columns every source row must have (a source without one fails before any row is read); override
    ``required_columns`` when they depend on the options or on the source."""
    optional_columns: ClassVar[tuple[str, ...]] = ()
    """Columns read when the source has them; override ``optional`` when they depend on the options."""
    group_by: ClassVar[tuple[str, ...]] = ()
    """Columns whose values, equal in consecutive rows, make a group: ``run`` then receives the group's rows
    as a list. Empty: ``run`` receives one row at a time."""

    def required_columns(self, options: Any, found: list[str]) -> list[str]:
        """The columns every row must have, given the options and the columns the source has (``found``)."""
        return list(self.columns)

    def optional(self, options: Any) -> list[str]:
        """The columns read when present, given the options."""
        return list(self.optional_columns)

    def check(self, options: Any, env: CheckEnv | None) -> None:
        """Checks of the options beyond their model (raise ``OptionError(key, message)``, key relative to
        the source's ``options``)."""

    def run(self, row: Any, options: Any) -> Result:
        """Canonical row(s) from one source row (a dict), or from a group (a list of dicts) with ``group_by``."""
        raise NotImplementedError


def text(value: Any, what: str) -> str:
    """``value`` stripped ("" for null); anything but a string raises ``WrongType`` naming ``what``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    raise WrongType(f"{what} is {kind_of(value)}, not text")


def kind_of(value: Any) -> str:
    """What a JSON value is, in a user's words."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def preference(user: Any, chosen: Any, rejected: Any, system: Any = None) -> Row:
    """A canonical preference row from plain strings (an empty ``system`` is left out); a value that is not a
    string (or null) raises ``WrongType``."""
    prompt = []
    system_text = text(system, "system")
    if system_text:
        prompt.append({"role": "system", "content": system_text})
    prompt.append({"role": "user", "content": text(user, "prompt")})
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": text(chosen, "chosen")}],
        "rejected": [{"role": "assistant", "content": text(rejected, "rejected")}],
    }

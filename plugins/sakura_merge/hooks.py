"""The registry the merge stage reads: merge methods, filled by ``sakura_register_merge_methods``.

Cheap to import (no pydantic, no torch): the CLI declares this registry on every start. The contract
itself is ``sakura_merge.contract``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sakura_core import hookspec
from sakura_core.registry import Register, RegistrySpec

if TYPE_CHECKING:  # pragma: no cover
    from sakura_merge.contract import MergeMethod


@hookspec
def sakura_register_merge_methods(register: Register[MergeMethod]) -> None:
    """Register merge methods: ``register("karcher", Karcher())``.

    A merge method is a ``sakura_merge.MergeMethod``: ``run(call)`` maps one output tensor's inputs to the
    output tensor, and its ``Options`` model validates its parameters. ``replace=True`` takes over a name
    another plugin registered (every mergekit method name is registered by the built-in bridge).
    """


MERGE_METHODS: RegistrySpec[MergeMethod] = RegistrySpec(
    attr="merge_methods",
    what="merge method",
    hookspec=sakura_register_merge_methods,
    contract="sakura_merge.contract:MergeMethod",
    title="Merge methods",
    named_by="`merge_method` in a merge stage",
    render="sakura_merge.docs:render_method",
    scaffold="sakura_merge.scaffold:SCAFFOLD",
    scaffold_kind="merge",
)

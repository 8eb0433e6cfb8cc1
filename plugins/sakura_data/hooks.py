"""The registry the dataset stage reads: adapters, filled by ``sakura_register_dataset_adapters``.

Cheap to import (no pydantic): the CLI declares this registry on every start. The contract itself is
``sakura_data.contract``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sakura_core import hookspec
from sakura_core.registry import Register, RegistrySpec

if TYPE_CHECKING:  # pragma: no cover
    from sakura_data.contract import Adapter


@hookspec
def sakura_register_dataset_adapters(register: Register[Adapter]) -> None:
    """Register dataset adapters: ``register("orca", OrcaAdapter())``.

    An adapter is a ``sakura_data.Adapter``: it declares the columns it reads and maps source rows to
    sakura's canonical rows (``prompt``/``chosen``/``rejected`` message lists for preference data,
    ``messages`` for SFT), zero, one or several per source row or per group of rows.
    """


DATASET_ADAPTERS: RegistrySpec[Adapter] = RegistrySpec(
    attr="dataset_adapters",
    what="dataset adapter",
    hookspec=sakura_register_dataset_adapters,
    contract="sakura_data.contract:Adapter",
    title="Dataset adapters",
    named_by="`adapter` in each table of a dataset stage's `sources` (its options in that table's `options`)",
    render="sakura_data.docs:render_adapter",
    scaffold="sakura_data.scaffold:SCAFFOLD",
    scaffold_kind="dataset",
)

"""The registry the train stage reads: trainers, filled by ``sakura_register_trainers``.

Cheap to import: the CLI declares this registry on every start. The contract itself is
``sakura_trl.contract``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sakura_core import hookspec
from sakura_core.registry import Register, RegistrySpec

if TYPE_CHECKING:  # pragma: no cover
    from sakura_trl.contract import Trainer


@hookspec
def sakura_register_trainers(register: Register[Trainer]) -> None:
    """Register trainers: ``register("ipo", IPO())``. Used by ``kind = "train"`` stages.

    A trainer is a ``sakura_trl.Trainer``: the trl config and trainer classes, the columns rows need,
    sakura's defaults, and ``run(job)`` that builds the trainer and trains.
    """


TRAINERS: RegistrySpec[Trainer] = RegistrySpec(
    attr="trainers",
    what="trainer",
    hookspec=sakura_register_trainers,
    contract="sakura_trl.contract:Trainer",
    title="Trainers",
    named_by="`trainer` in a train stage",
    render="sakura_trl.docs:render_trainer",
    scaffold="sakura_trl.scaffold:SCAFFOLD",
    scaffold_kind="trainer",
)

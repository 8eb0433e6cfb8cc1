"""The registry the publish stage reads: publishers, filled by ``sakura_register_publishers``.

Cheap to import: the CLI declares this registry on every start. The contract itself is
``sakura_publish.publisher``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sakura_core import hookspec
from sakura_core.registry import Register, RegistrySpec

if TYPE_CHECKING:  # pragma: no cover
    from sakura_publish.publisher import Publisher


@hookspec
def sakura_register_publishers(register: Register[Publisher]) -> None:
    """Register publishers: ``register("hub", HubPublisher())``. Used by ``kind = "publish"`` stages.

    A publisher is a ``sakura_publish.Publisher``: an ``Options`` model for its keys in the publish stage's
    table and ``run(bundle, options, env)``, which puts the bundle's files somewhere and says where.
    """


PUBLISHERS: RegistrySpec[Publisher] = RegistrySpec(
    attr="publishers",
    what="publisher",
    hookspec=sakura_register_publishers,
    contract="sakura_publish.publisher:Publisher",
    title="Publishers",
    named_by="`publisher` in a publish stage",
    render="sakura_publish.docs:render_publisher",
    scaffold="sakura_publish.scaffold:SCAFFOLD",
    scaffold_kind="publisher",
)

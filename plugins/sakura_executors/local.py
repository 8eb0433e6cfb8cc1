"""The default executor: the family's distinct stages one after another, in this process."""

from __future__ import annotations

from typing import Any

from sakura_core.executor import Executor, Work


class LocalExecutor(Executor):
    """Runs every stage in this process, one after another, in the family's order (shared stages first)."""

    def run(self, work: Work, options: Any) -> None:
        for node in work.nodes:
            why = work.blocked(node)
            work.finish(node, work.skip(node, why) if why is not None else work.execute(node))

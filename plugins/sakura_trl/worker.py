"""Entry point of each process under ``accelerate launch``: ``python -m sakura_trl.worker SPEC.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sakura_core.errors import SakuraError


def main(spec_path: str) -> int:
    from accelerate import PartialState

    from sakura_core.orphans import die_with_parent
    from sakura_core.plugins import Plugins

    die_with_parent()  # the launcher that started this process dies: so does it (its launcher dies with sakura)
    from sakura_trl.run import train

    spec = json.loads(Path(spec_path).read_text())
    plugins = Plugins()
    for path in spec.get("plugin_files", []):
        plugins.load_file(Path(path))
    state = PartialState(cpu=_cpu_only())
    main_process = state.is_main_process
    result: dict[str, Any] = {}
    try:
        trainer = plugins.trainers.get(spec["trainer"])
        metrics = train(spec, trainer, WorkerReport(main_process))
        metrics["num_processes"] = state.num_processes
        metrics["distributed_type"] = str(state.distributed_type.value)
        result = {"metrics": metrics}
        code = 0
    except SakuraError as exc:
        result = {"error": str(exc)}
        code = 1
    if main_process:
        Path(spec["result_path"]).write_text(json.dumps(result, default=str))
    return code


def _cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


class WorkerReport:
    """The ``Report`` interface as event lines on stdout (main process only), read by the launching process."""

    def __init__(self, main_process: bool):
        self.main = main_process

    def _emit(self, event: str, **values: Any) -> None:
        if self.main:
            print("SAKURA_EVENT " + json.dumps({"event": event, **values}, default=str), flush=True)

    def start(self, description: str, total: int, unit: str = "steps") -> None:
        self._emit("start", description=description, total=total, unit=unit)

    def step(self, done: int) -> None:
        self._emit("step", done=done)

    def finish(self) -> None:
        self._emit("finish")

    def metric(self, **values: Any) -> None:
        self._emit("metric", values=values)

    def log(self, message: str) -> None:
        self._emit("log", message=message)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

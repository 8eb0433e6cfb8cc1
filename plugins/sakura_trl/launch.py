"""``launcher = { num_processes = N, config_file = "..." }``: the stage's training under ``accelerate launch``.

The parent (the engine's process) writes the run's spec to the work area, starts
``accelerate launch -m sakura_trl.worker SPEC``, forwards the workers' progress and metric lines to the
live view, and reads the result the main worker wrote. On a machine without CUDA the workers run DDP on
CPU with the gloo backend. A config file selects DeepSpeed ZeRO / FSDP / multi-node as accelerate does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError
from sakura_core.stage import StageContext
from sakura_core.subprocess_env import safe_cwd, safe_python_env

EVENT = "SAKURA_EVENT "


def launch_command(spec_path: Path, launcher: Any, recipe_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launcher.num_processes),
           "--num_machines", "1"]
    if launcher.config_file:
        cmd += ["--config_file", str(recipe_dir / launcher.config_file)]
    elif launcher.num_processes > 1:
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if launcher.main_process_port or not launcher.config_file:  # a config file's own port wins unless one is set
        cmd += ["--main_process_port", str(launcher.main_process_port or 0)]  # 0: a free port
    cmd += ["-m", "sakura_trl.worker", str(spec_path)]
    return cmd


def launch_env(launcher: Any) -> dict[str, str]:
    """The environment of ``accelerate launch`` and its workers: nothing is imported from the working directory."""
    env = safe_python_env()
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // launcher.num_processes)))
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def run_launched(ctx: StageContext, spec: dict[str, Any]) -> dict[str, Any]:
    launcher = ctx.options.launcher
    work = Path(spec["work_dir"])
    spec_path = work / "launch_spec.json"
    result_path = work / "launch_result.json"
    result_path.unlink(missing_ok=True)
    spec = {**spec, "result_path": str(result_path)}
    spec_path.write_text(json.dumps(spec, indent=2))
    env = launch_env(launcher)
    cmd = launch_command(spec_path, launcher, ctx.recipe_dir)
    ctx.log(f"launching {launcher.num_processes} process(es): accelerate launch ... -m sakura_trl.worker")
    tail: deque[str] = deque(maxlen=400)
    task = None
    log = work / "launch.log"
    cwd = safe_cwd(str(work))
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd) as proc, \
            open(log, "w") as log_file:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(EVENT):
                event = json.loads(line[len(EVENT):])
                kind = event.pop("event")
                if kind == "start":
                    if task is not None:
                        task.__exit__(None, None, None)
                    task = ctx.progress(event["description"], total=event["total"], unit=event.get("unit", "steps"))
                elif kind == "step" and task is not None:
                    task.update(event["done"])
                elif kind == "finish" and task is not None:
                    task.__exit__(None, None, None)
                    task = None
                elif kind == "metric":
                    ctx.metric(**event["values"])
                elif kind == "log":
                    ctx.log(event["message"])
            else:
                tail.append(line.rstrip())
                log_file.write(line)
        code = proc.wait()
    if task is not None:
        task.__exit__(None, None, None)
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if result.get("error"):
        raise StageError(result["error"])
    if code != 0 or "metrics" not in result:
        last = _first_error(tail)
        raise StageError(f"launched training failed (exit code {code}): {last} (last output in {log})")
    return result["metrics"]


def _first_error(lines: Any) -> str:
    """The first exception line of a worker (``SomeError: message``), else the last non-empty line."""
    import re

    for line in lines:
        line = re.sub(r"^\[rank\d+\]:\s*", "", line.strip())
        if re.match(r"^[\w.]*(Error|Exception)\b.*:", line) and "ChildFailedError" not in line:
            return line
    return next((t.strip() for t in reversed(lines) if t.strip()), "no output")

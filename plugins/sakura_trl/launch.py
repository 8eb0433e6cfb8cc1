"""``launcher = { num_processes = N, config_file = "..." }``: the stage's training under ``accelerate launch``.

The parent (the engine's process) writes the run's spec to the work area, starts
``accelerate launch -m sakura_trl.worker SPEC``, forwards the workers' progress and metric lines to the
live view, and reads the result the main worker wrote. On a machine without CUDA the workers run DDP on
CPU with the gloo backend. A config file selects DeepSpeed ZeRO / FSDP / multi-node as accelerate does.

Across machines the spec, the checkpoints and the artifact being written are in the store, which every
machine must see (shared storage): the other machines' workers read the same spec, and the main worker
(rank 0 of machine 0) writes the result. With ``srun`` the launch is one ``srun`` task per node of the
SLURM allocation, each passing its ``$SLURM_NODEID`` as machine rank. See docs/scaling.md.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError
from sakura_core.orphans import die_with_parent
from sakura_core.stage import StageContext
from sakura_core.subprocess_env import safe_cwd, safe_python_env

EVENT = "SAKURA_EVENT "


MULTI_NODE_PORT = 29500  # accelerate's default: every machine must know it, so no "any free port"


def launch_command(spec_path: Path, launcher: Any, recipe_dir: Path) -> list[str]:
    """The ``accelerate launch`` command line (wrapped in ``srun`` with ``launcher.srun``).

    A key the recipe leaves unset is not passed when a config file is given, so the file's value holds:
    passing ``--num_machines 1`` (or ``--num_processes 1``) would silently override a multi-node file.
    """
    chosen = launcher.model_fields_set
    config = launcher.config_file
    args = ["--num_processes", str(launcher.num_processes)] if "num_processes" in chosen or not config else []
    machines = launcher.num_machines or (None if config else 1)
    if machines is not None:
        args += ["--num_machines", str(machines)]
    if config:
        args += ["--config_file", str(recipe_dir / config)]
    elif launcher.num_processes > 1 or (machines or 1) > 1:
        args += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if launcher.machine_rank is not None:  # with srun each node's own, below; else the file's (validated)
        args += ["--machine_rank", str(launcher.machine_rank)]
    if launcher.main_process_ip:
        args += ["--main_process_ip", launcher.main_process_ip]
    if launcher.main_process_port or not config:  # a config file's own port wins unless one is set
        port = launcher.main_process_port or (MULTI_NODE_PORT if (machines or 1) > 1 or launcher.srun else 0)
        args += ["--main_process_port", str(port)]  # 0: a free port, on one machine only
    args += ["-m", "sakura_trl.worker", str(spec_path)]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *args]
    if not launcher.srun:
        return cmd
    # one task per node; the rank is each task's own, so it is read by a shell on that node
    nodes = ["--nodes", str(machines)] if machines else []
    shell = f'exec {shlex.join(cmd[:3])} --machine_rank "$SLURM_NODEID" {shlex.join(cmd[3:])}'
    return ["srun", *nodes, "--ntasks-per-node", "1", "--kill-on-bad-exit", "1", "bash", "-c", shell]


def other_machines(cmd: list[str]) -> str:
    """The command another machine runs to join this launch (the spec is in the shared store)."""
    at = cmd.index("--machine_rank")
    return shlex.join(cmd[:at + 1]) + " K " + shlex.join(cmd[at + 2:])


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
    if launcher.machine_rank:
        raise StageError(f"launcher.machine_rank = {launcher.machine_rank}: the sakura run that writes the artifact is "
                         f"machine 0; on machine {launcher.machine_rank} run: {other_machines(cmd)}")
    if launcher.machine_rank == 0 and (launcher.num_machines or 1) > 1:
        ctx.log(f"waiting for the other machines: on each, with its rank K, run: {other_machines(cmd)}")
    where = f" on {launcher.num_machines} machines" if (launcher.num_machines or 1) > 1 else ""
    via = "srun ... accelerate launch" if launcher.srun else "accelerate launch"
    ctx.log(f"launching {launcher.num_processes} process(es){where}: {via} ... -m sakura_trl.worker")
    tail: deque[str] = deque(maxlen=400)
    task = None
    log = work / "launch.log"
    cwd = safe_cwd(str(work))
    parent = os.getpid()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
                          preexec_fn=lambda: die_with_parent(parent)) as proc, \
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

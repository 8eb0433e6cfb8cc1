"""``--executor ray``: each stage a Ray task, submitted when its inputs exist.

The driver (``sakura run``) plans the family, serves cached stages from the store itself (they are never
scheduled) and submits every other distinct stage as a Ray task once the stages it reads have finished; Ray
places each task by the resources it asks for (a GPU for a stage whose estimate is on the GPU when the
cluster has GPUs, ``launcher.num_processes`` GPUs for a multi-process train stage; CPUs otherwise). A task
loads the recipe again, checks its fingerprint is the driver's and runs the stage under the store's locks,
so the store must be one every node sees: the driver writes a marker into it that each task checks first.

Without ``--address`` Ray starts on this machine (a workstation with two GPUs trains two variants at once);
with one it joins a running cluster (``ray start``, KubeRay, SkyPilot: docs/scaling.md).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import Field

from sakura_core.executor import Executor, StageJob, Work
from sakura_core.options import Options

# Environment a task needs to see what the driver sees (store, Hub endpoint, offline mode, caches). Tokens are
# not sent: Ray keeps a job's environment in its control store, readable from its dashboard; workers log in
# from their own environment (HF_TOKEN or `huggingface-cli login` on each node).
FORWARDED_ENV = ("SAKURA_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TOKENIZERS_")
NOT_FORWARDED = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN"}


class RayOptions(Options):
    """``sakura run --executor ray``: where Ray runs and what each stage asks of it."""

    address: str | None = None
    """A running cluster to join (``auto``, ``HOST:6379``, ``ray://HOST:10001``); unset: start Ray on this
    machine for the run (``--address``)."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs a Ray started on this machine may use (default: all); ignored with ``address``."""
    cpus_per_stage: float = Field(1.0, gt=0)
    """CPUs each stage asks for: on a machine without GPUs, how many stages run at once is its CPUs over this."""
    retries: int = Field(1, ge=0)
    """How many times a stage whose worker died (a node lost, a process killed) is started again before it is
    reported as failed; a stage that raises is reported at once."""


class RayExecutor(Executor):
    """Each stage a task on a Ray cluster (local without ``--address``), started when its inputs exist."""

    Options = RayOptions
    url = "https://docs.ray.io/en/latest/ray-core/tasks.html"
    libraries = ("ray",)

    def run(self, work: Work, options: RayOptions) -> None:
        ray = _import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV) and k not in NOT_FORWARDED}
            work.reporter.log(f"ray: {'joining ' + options.address if options.address else 'starting Ray on this machine'}")
            ray.init(address=options.address, num_cpus=None if options.address else options.num_cpus,
                     include_dashboard=False, configure_logging=False, log_to_driver=True,
                     runtime_env={"env_vars": env} if env else None)
        marker = _write_marker(work.store_dir)
        try:
            self._schedule(ray, work, options, marker)
        finally:
            marker.unlink(missing_ok=True)
            if started_here:
                ray.shutdown()

    def _schedule(self, ray: Any, work: Work, options: RayOptions, marker: Path) -> None:
        remote = ray.remote(_run_on_worker)
        gpus_in_cluster = ray.cluster_resources().get("GPU", 0) > 0
        # a request above every node's memory would never be scheduled: ask at most 80% of the largest
        largest = max((n.get("Resources", {}).get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        waiting = list(work.nodes)
        running: dict[Any, tuple[Any, float]] = {}  # task ref -> (node, submitted at)
        try:
            while waiting or running:
                for node in list(waiting):
                    if any(f not in work.done for f in work.inputs(node)):
                        continue  # an input is still being built
                    waiting.remove(node)
                    why = work.blocked(node)
                    if why is not None:
                        work.finish(node, work.skip(node, why))
                        continue
                    cached = work.cached(node)
                    if cached is not None:
                        work.finish(node, cached)
                        continue
                    gpus = work.gpus(node) if gpus_in_cluster else 0
                    # host memory from the plan's estimate for a stage that runs without a GPU (on a GPU the
                    # estimate is the GPU's memory, which Ray does not schedule)
                    memory = min(work.memory(node) or 0, int(0.8 * largest)) if not gpus else 0
                    ask = {"num_cpus": options.cpus_per_stage, "num_gpus": gpus, **({"memory": memory} if memory else {})}
                    ref = remote.options(**ask, max_retries=options.retries, name=f"sakura {node.label}").remote(
                        work.job(node), str(marker))
                    running[ref] = (node, time.monotonic())
                    work.reporter.stage_started(node.label, work.kind(node))
                    work.reporter.log(f"{node.label}: submitted to Ray ({options.cpus_per_stage:g} CPU"
                                      f"{f', {gpus} GPU' if gpus else ''}{f', {memory / 2**30:.1f} GiB' if memory else ''})")
                if not running:
                    continue
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    node, submitted = running.pop(ref)
                    outcome, host = self._collect(ray, ref, work.job(node))
                    work.reporter.stage_finished(node.label, outcome.status, outcome.seconds or time.monotonic() - submitted,
                                                 f"on {host}" if host else (outcome.error or ""))
                    work.finish(node, outcome)
        except BaseException:
            for ref in running:  # Ctrl-C or a driver error: nothing keeps running on the cluster
                ray.cancel(ref, force=True)
            raise

    @staticmethod
    def _collect(ray: Any, ref: Any, job: StageJob) -> tuple[Any, str]:
        """The stage's outcome and the node that ran it; a task that raised or whose worker died is a failed
        stage, in one line (the store never holds a half-written artifact: it renames a finished build into
        place, and a dead worker's locks go with it)."""
        from ray.exceptions import RayError, RayTaskError

        from sakura_core.stage import StageOutcome

        try:
            outcome, host = ray.get(ref)
            return outcome, host
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            why = f"{type(cause).__name__}: {cause}".splitlines()[0]
        except RayError as exc:
            why = f"its Ray worker was lost ({type(exc).__name__})"
        return StageOutcome(job.stage, "", "", "failed", job.fingerprint, error=f"stage {job.stage}: {why}",
                            exit_code=1), ""


def _run_on_worker(job: StageJob, marker: str) -> tuple[Any, str]:
    """A Ray task: run one stage on this node (see ``sakura_core.executor.run_job``), after checking this node
    sees the driver's store."""
    import sys

    from sakura_core.executor import run_job
    from sakura_core.progress import PlainReporter, quiet_libraries
    from sakura_core.stage import StageOutcome

    quiet_libraries()  # as `sakura run` does: the stage reports its own progress
    host = socket.gethostname()
    if not Path(marker).is_file():
        return StageOutcome(job.stage, "", "", "failed", job.fingerprint, exit_code=2, error=(
            f"the store {Path(marker).parent.parent} is not visible from node {host}: with a cluster, put the store "
            "on storage every node mounts at the same path (NFS, Lustre, a mounted bucket; --store)")), host
    with PlainReporter(sys.stderr) as reporter:  # Ray forwards a task's lines to the driver, prefixed with it
        return run_job(job, reporter), host


def _write_marker(store: Path) -> Path:
    """A file only this run writes into the store; a task that cannot see it runs on a node without the store."""
    folder = store / "executors"
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"ray-{uuid.uuid4().hex}"
    marker.write_text(f"{socket.gethostname()} {os.getpid()}\n")
    return marker


def _import_ray() -> Any:
    from sakura_core.errors import SakuraError

    try:
        import ray
    except ImportError:
        raise SakuraError('--executor ray needs Ray: pip install "sakura-recipes[ray]"', exit_code=2) from None
    return ray

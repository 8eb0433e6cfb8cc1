"""How stages report progress: a rich live view on a terminal, plain log lines elsewhere.

Plugins never talk to rich directly: they call ``ctx.progress(...)``, ``ctx.log(...)`` and
``ctx.metric(...)``, which land in whichever ``Reporter`` the run uses.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any


class Task:
    """One progress bar. Use as a context manager; ``advance`` / ``update`` from any thread."""

    def __init__(self, reporter: Reporter, description: str, total: float | None, unit: str):
        self.reporter = reporter
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0.0

    def advance(self, amount: float = 1) -> None:
        self.update(self.completed + amount)

    def update(self, completed: float, total: float | None = None) -> None:
        self.completed = completed
        if total is not None:
            self.total = total
        self.reporter._task_updated(self)

    def close(self) -> None:
        """Remove the bar (also done on leaving a ``with`` block)."""
        self.reporter._task_done(self)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Reporter:
    """Base reporter: records nothing, prints nothing (used by tests and library callers)."""

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        task = Task(self, description, total, unit)
        self._task_started(task)
        return task

    def log(self, message: str) -> None:
        pass

    def stage_started(self, name: str, kind: str) -> None:
        pass

    def stage_finished(self, name: str, status: str, seconds: float, detail: str = "") -> None:
        pass

    def stage_metrics(self, name: str, values: dict[str, Any]) -> None:
        pass

    def _task_started(self, task: Task) -> None:
        pass

    def _task_updated(self, task: Task) -> None:
        pass

    def _task_done(self, task: Task) -> None:
        pass


def _fmt_metrics(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


class PlainReporter(Reporter):
    """Log lines for CI and pipes: a line when a task starts, at 25% steps, and at least every ``interval``
    seconds while a task or stage runs, even when nothing advances (a long optimizer step, a download)."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 10.0):
        self.stream = stream or sys.stderr
        self.interval = interval
        self._lock = threading.Lock()  # one line at a time
        self._state = threading.Lock()  # what is open, shared with the ticker thread
        self._last: dict[int, tuple[float, int]] = {}  # task -> (time of its last line, last quarter shown)
        self._tasks: dict[int, tuple[Task, float]] = {}  # open task -> when it started
        self._stages: dict[str, tuple[float, float]] = {}  # running stage -> (when it started, its last line)
        self._done = threading.Event()
        self._ticker: threading.Thread | None = None

    def __exit__(self, *exc: Any) -> None:
        self._done.set()

    def _print(self, line: str) -> None:
        with self._lock:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", file=self.stream, flush=True)

    def log(self, message: str) -> None:
        self._print(message)

    def stage_started(self, name: str, kind: str) -> None:
        now = time.monotonic()
        with self._state:
            self._stages[name] = (now, now)
        self._start_ticker()
        self._print(f"stage {name} ({kind}): running")

    def stage_finished(self, name: str, status: str, seconds: float, detail: str = "") -> None:
        with self._state:
            self._stages.pop(name, None)
        extra = f" - {detail}" if detail else ""
        self._print(f"stage {name}: {status} in {seconds:.1f}s{extra}")

    def stage_metrics(self, name: str, values: dict[str, Any]) -> None:
        now = time.monotonic()
        last, _ = self._last.get(hash(name), (0.0, 0))
        if now - last >= self.interval:
            self._last[hash(name)] = (now, 0)
            self._print(f"{name}: {_fmt_metrics(values)}")

    def _task_started(self, task: Task) -> None:
        now = time.monotonic()
        with self._state:
            self._last[id(task)] = (now, 0)
            self._tasks[id(task)] = (task, now)
        self._start_ticker()
        total = f" ({task.total:g}{' ' + task.unit if task.unit else ''})" if task.total else ""
        self._print(f"{task.description}{total}")

    def _task_updated(self, task: Task) -> None:
        last_time, last_quarter = self._last.get(id(task), (0.0, 0))
        quarter = int(4 * task.completed / task.total) if task.total else 0
        now = time.monotonic()
        if quarter > last_quarter or now - last_time >= self.interval:
            self._last[id(task)] = (now, quarter)
            self._print(f"{task.description}: {_progress_text(task)}")

    def _task_done(self, task: Task) -> None:
        with self._state:
            self._last.pop(id(task), None)
            self._tasks.pop(id(task), None)

    # -- a line every interval while something runs, from a thread of its own ----------------------
    def _start_ticker(self) -> None:
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="sakura-plain-progress", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._done.wait(min(1.0, self.interval / 2)):
            with self._state:
                lines = self._quiet_lines(time.monotonic())
            for line in lines:
                self._print(line)

    def _quiet_lines(self, now: float) -> list[str]:
        """A line for each open task that printed nothing for ``interval``; for a running stage when it has no
        task open (its work reports no steps)."""
        lines = []
        for key, (task, started) in self._tasks.items():
            last_time, quarter = self._last.get(key, (now, 0))
            if now - last_time >= self.interval:
                self._last[key] = (now, quarter)
                lines.append(f"{task.description}: {_progress_text(task)}, {_duration(now - started)} so far")
        for name, (started, last) in self._stages.items():
            if not self._tasks and now - last >= self.interval:
                self._stages[name] = (started, now)
                lines.append(f"stage {name}: running, {_duration(now - started)} so far")
        return lines


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def _progress_text(task: Task) -> str:
    if task.total:
        return f"{task.completed:g}/{task.total:g} {task.unit}".rstrip() + f" ({100 * task.completed / task.total:.0f}%)"
    return f"{task.completed:g} {task.unit}".rstrip()


class RichReporter(Reporter):
    """A live view: one line per stage with its status and live metrics, and a bar per long step."""

    def __init__(self, stages: list[tuple[str, str]], console: Any = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console or Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self._stage_tasks: dict[str, Any] = {}
        self._bars: dict[int, Any] = {}
        from rich.markup import escape

        for name, kind in stages:  # a family's rows read "dpo [variant]": escaped, or rich takes it for markup
            self._stage_tasks[name] = self.progress.add_task(f"[bold]{escape(name)}[/] ({kind})", total=1, info="waiting",
                                                             start=False)

    def __enter__(self) -> RichReporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def log(self, message: str) -> None:
        self.progress.console.log(message)

    def stage_started(self, name: str, kind: str) -> None:
        task_id = self._stage_tasks[name]
        self.progress.start_task(task_id)
        self.progress.update(task_id, info="running")

    def stage_finished(self, name: str, status: str, seconds: float, detail: str = "") -> None:
        colour = {"ran": "green", "cached": "cyan", "failed": "red"}.get(status, "white")
        self.progress.update(
            self._stage_tasks[name], completed=1, info=f"[{colour}]{status}[/] {seconds:.1f}s {detail}".rstrip()
        )

    def stage_metrics(self, name: str, values: dict[str, Any]) -> None:
        self.progress.update(self._stage_tasks[name], info=f"running {_fmt_metrics(values)}")

    def _task_started(self, task: Task) -> None:
        from rich.markup import escape

        self._bars[id(task)] = self.progress.add_task(f"  {escape(task.description)}", total=task.total, info=task.unit)

    def _task_updated(self, task: Task) -> None:
        self.progress.update(self._bars[id(task)], completed=task.completed, total=task.total)

    def _task_done(self, task: Task) -> None:
        bar = self._bars.pop(id(task), None)
        if bar is not None:
            self.progress.remove_task(bar)


def quiet_libraries() -> None:
    """Stages report progress through sakura's own view: silence the libraries' tqdm bars and chatter."""
    import os
    import warnings

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

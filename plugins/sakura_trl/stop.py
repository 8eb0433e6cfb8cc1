"""SIGTERM during training (a cluster's pre-emption, ``kill``): a checkpoint, then one line saying where the
run stopped and what a re-run resumes from, instead of a silent exit that loses every step since the last
checkpoint."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from sakura_core.errors import StageError


class Stopped(StageError):
    """The run stopped on SIGTERM; the message says what was kept."""

    exit_code = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class StopOnSigterm:
    """Around a training run (the trainer's set-up and reference pass, then the steps), in one process. The
    first SIGTERM during the steps asks the trainer to save a checkpoint when the current step ends, then stop
    (``requested``); before the first step, or on a second SIGTERM, the run stops at once, saying what is lost.
    Processes under ``accelerate launch`` keep the default (a stop must be agreed by every rank)."""

    def __init__(self, checkpoints: Path):
        self.checkpoints = checkpoints
        self.requested = False
        self.step = 0  # the last finished step
        self.max_steps = 0
        self.training = False  # between the first step's start and the last step's end
        self._previous: Any = None

    def __enter__(self) -> StopOnSigterm:
        alone = int(os.environ.get("WORLD_SIZE", "1")) == 1
        if alone and threading.current_thread() is threading.main_thread():  # handlers live in the main thread
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.training and not self.requested:
            self.requested = True  # the callback saves and stops at the end of this step
            return
        raise Stopped(self.lost())

    def lost(self) -> str:
        """The line for a stop with no checkpoint of its own."""
        if not self.training:
            return "stopped by SIGTERM before the first training step: nothing to save; a re-run starts training over"
        kept = self.last_checkpoint()
        since = kept.name if kept else "the start"
        resume = f"a re-run resumes from {kept.name}" if kept else "a re-run starts training over"
        return f"stopped by a second SIGTERM during step {self.step + 1}: the steps after {since} are lost; {resume}"

    def stopped(self) -> str:
        """The line for a stop after the checkpoint the first SIGTERM asked for."""
        kept = self.last_checkpoint()
        where = f"saved {kept.name} in {kept.parent}" if kept else "no checkpoint was written"
        return f"stopped by SIGTERM after step {self.step} of {self.max_steps}: {where}; run again to resume from it"

    def last_checkpoint(self) -> Path | None:
        from sakura_trl.checkpoints import newest_complete

        return newest_complete(self.checkpoints)

"""How runs report progress without a terminal: PlainReporter's log lines."""

from __future__ import annotations

import io
import time

from sakura_core.progress import PlainReporter


def lines_of(stream: io.StringIO) -> list[str]:
    return [line.split("] ", 1)[1] for line in stream.getvalue().splitlines()]


def test_plain_lines_keep_coming_while_nothing_advances():
    """A long optimizer step or a download advances nothing for minutes: a line still comes every interval."""
    stream = io.StringIO()
    with PlainReporter(stream, interval=0.2) as reporter:
        reporter.stage_started("dpo", "train")
        with reporter.task("dpo: training", total=10, unit="steps") as task:
            task.update(2)  # the first quarter is not reached: no line of its own
            time.sleep(0.75)
        quiet_task = lines_of(stream)
        time.sleep(0.55)  # the stage runs on with no task open
        reporter.stage_finished("dpo", "ran", 1.3)
        quiet_stage = lines_of(stream)[len(quiet_task):]
        time.sleep(0.5)
    assert quiet_task[:2] == ["stage dpo (train): running", "dpo: training (10 steps)"]
    ticks = quiet_task[2:]
    assert len(ticks) >= 2 and all(line.startswith("dpo: training: 2/10 steps (20%), ") and line.endswith(" so far")
                                   for line in ticks)
    assert quiet_stage[:-1] and all(line.startswith("stage dpo: running, ") for line in quiet_stage[:-1])
    assert quiet_stage[-1] == "stage dpo: ran in 1.3s"
    assert lines_of(stream)[-1] == "stage dpo: ran in 1.3s"  # nothing after the stage ended


def test_plain_lines_at_each_quarter_and_not_between():
    stream = io.StringIO()
    reporter = PlainReporter(stream, interval=60)
    with reporter.task("merge: tensors", total=8) as task:
        for done in range(1, 9):
            task.update(done)
    assert lines_of(stream) == ["merge: tensors (8)", "merge: tensors: 2/8 (25%)", "merge: tensors: 4/8 (50%)",
                                "merge: tensors: 6/8 (75%)", "merge: tensors: 8/8 (100%)"]

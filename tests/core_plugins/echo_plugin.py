"""A recipe-local plugin used by the core tests: stage kinds that do small, observable work.

``echo`` writes its text plus its inputs' fingerprints (and ``SAKURA_TEST_SALT``, to make a rebuild differ), and a
copy to ``mirror`` outside the store (gone: the stage is outdated); ``slow`` writes chunks with pauses so a test can
kill the process mid-stage (it touches ``started_marker`` when it begins) and, with ``wait_for``, holds the stage
open until that file exists (a test does something while the stage is building).
"""

import hashlib
import json
import os
import time
from pathlib import Path

from pydantic import Field

from sakura_core import OptionError, StageError, hookimpl
from sakura_core.errors import did_you_mean
from sakura_core.options import Options
from sakura_core.stage import StageKind

COLOURS = ("red", "green", "blue")


class EchoOptions(Options):
    reads: list[str] = []
    text: str = "hello"
    colour: str = "red"
    repeat: int = Field(1, ge=1)
    fail: bool = False
    mirror: str = ""  # a file outside the store the stage also writes (as a publisher writes a repo)


class Echo(StageKind):
    Options = EchoOptions
    libraries = ("pluggy",)  # recorded in its manifests (plan shows a version change)

    def references(self, options):
        return {f"reads[{i}]": name for i, name in enumerate(options.reads)}

    def check(self, options, env):
        if options.colour not in COLOURS:
            raise OptionError("colour", f"unknown colour {options.colour!r}{did_you_mean(options.colour, COLOURS)}")

    def run(self, ctx):
        counter = os.environ.get("SAKURA_TEST_COUNTER")
        if counter:
            with open(counter, "a") as fh:
                fh.write(ctx.name + "\n")
        if ctx.options.fail:
            (ctx.output_dir / "partial.txt").write_text("half")
            raise StageError("refusing on purpose")
        lines = [ctx.options.text * ctx.options.repeat]
        if os.environ.get("SAKURA_TEST_SALT"):  # different bytes under the same fingerprint (a nondeterministic stage)
            lines.append(os.environ["SAKURA_TEST_SALT"])
        lines += [f"{name}={inp.fingerprint}" for name, inp in sorted(ctx.inputs.items())]
        (ctx.output_dir / "out.txt").write_text("\n".join(lines))
        if ctx.options.mirror:
            Path(ctx.options.mirror).write_text("\n".join(lines))
        return {"lines": len(lines)}

    def outdated(self, options, artifact, env):
        if options.mirror and not Path(options.mirror).exists():
            return f"{Path(options.mirror).name} is gone"
        return None


class SlowOptions(Options):
    reads: list[str] = []
    chunks: int = 20
    pause: float = 0.05
    started_marker: str = ""
    wait_for: str = ""  # a file: the stage goes on only once it exists (at most 120 s)


class Slow(StageKind):
    Options = SlowOptions

    def references(self, options):
        return {f"reads[{i}]": name for i, name in enumerate(options.reads)}

    def run(self, ctx):
        if ctx.options.started_marker:
            Path(ctx.options.started_marker).write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while ctx.options.wait_for and not Path(ctx.options.wait_for).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        digest = hashlib.sha256()
        for name, inp in sorted(ctx.inputs.items()):
            digest.update(inp.fingerprint.encode())
        with ctx.progress("writing chunks", total=ctx.options.chunks) as task:
            for i in range(ctx.options.chunks):
                digest.update(str(i).encode())
                (ctx.output_dir / f"chunk{i:03d}.txt").write_text(digest.hexdigest())
                time.sleep(ctx.options.pause)
                task.advance()
        (ctx.output_dir / "result.json").write_text(json.dumps({"digest": digest.hexdigest()}))
        return {"chunks": ctx.options.chunks}


@hookimpl
def sakura_register_stage_kinds(register):
    register("echo", Echo())
    register("slow", Slow())

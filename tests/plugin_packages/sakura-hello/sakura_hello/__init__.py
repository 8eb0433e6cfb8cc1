"""A third-party plugin package, installed by the tests with pip to check entry-point discovery."""

from sakura_core import hookimpl
from sakura_core.options import Options
from sakura_core.stage import StageKind


class HelloOptions(Options):
    greeting: str = "hello"


class Hello(StageKind):
    Options = HelloOptions

    def run(self, ctx):
        (ctx.output_dir / "greeting.txt").write_text(ctx.options.greeting)
        return {"chars": len(ctx.options.greeting)}


@hookimpl
def sakura_register_stage_kinds(register):
    register("hello", Hello())

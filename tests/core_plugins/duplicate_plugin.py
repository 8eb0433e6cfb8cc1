"""Registers a stage kind named like one of echo_plugin's: loading both must fail, naming both."""

from sakura_core import hookimpl
from sakura_core.options import Options
from sakura_core.stage import StageKind


class Other(StageKind):
    Options = Options


@hookimpl
def sakura_register_stage_kinds(register):
    register("echo", Other())

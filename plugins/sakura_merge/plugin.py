"""Built-in plugin sakura_merge: the ``merge`` stage kind, the merge methods and ``sakura merge``."""

from sakura_core import hookimpl


@hookimpl
def sakura_declare_registries(declare):
    from sakura_merge.hooks import MERGE_METHODS

    declare(MERGE_METHODS)


@hookimpl
def sakura_register_stage_kinds(register):
    from sakura_merge.stage import MergeStage

    register("merge", MergeStage())


@hookimpl
def sakura_register_merge_methods(register):
    from sakura_merge.methods import builtin_methods

    for name, method in builtin_methods().items():
        register(name, method)


@hookimpl
def sakura_register_commands(cli):
    from sakura_merge.cli import add_merge_command

    add_merge_command(cli)

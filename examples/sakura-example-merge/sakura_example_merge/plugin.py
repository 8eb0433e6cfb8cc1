"""The hooks sakura calls (the package's entry point): cheap to import, the method is imported in the hook."""

from sakura_core import hookimpl


@hookimpl
def sakura_register_merge_methods(register):
    from sakura_example_merge.method import Geometric

    register("geometric", Geometric())

"""The hooks (the entry point): cheap to import, the implementation is imported inside the hook."""

from sakura_core import hookimpl


@hookimpl
def sakura_register_merge_methods(register):
    from sakura_karcher.method import Karcher

    # The built-in mergekit bridge registers "karcher" too: take the name over, on purpose.
    register("karcher", Karcher(), replace=True)

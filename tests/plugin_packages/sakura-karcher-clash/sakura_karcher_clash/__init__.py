"""A plugin that registers a merge method under a name another plugin holds, by accident (no replace=True)."""

from sakura_core import hookimpl


@hookimpl
def sakura_register_merge_methods(register):
    from sakura_merge import MergeMethod

    class Mean(MergeMethod):
        """Plain mean."""

        def run(self, call):
            return sum(call.tensors) / len(call.tensors)

    register("karcher", Mean())

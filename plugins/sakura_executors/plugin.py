from sakura_core import hookimpl


@hookimpl
def sakura_register_executors(register):
    from sakura_executors.local import LocalExecutor
    from sakura_executors.ray_executor import RayExecutor

    register("local", LocalExecutor())
    register("ray", RayExecutor())

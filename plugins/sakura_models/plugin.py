from sakura_core import hookimpl


@hookimpl
def sakura_register_model_sources(register):
    from sakura_models.local import LocalSource
    from sakura_models.tiny import TinySource

    register("tiny", TinySource())
    register("local", LocalSource())

"""Built-in plugin sakura_data: the ``dataset`` stage kind and the built-in dataset adapters."""

from sakura_core import hookimpl


@hookimpl
def sakura_declare_registries(declare):
    from sakura_data.hooks import DATASET_ADAPTERS

    declare(DATASET_ADAPTERS)


@hookimpl
def sakura_register_stage_kinds(register):
    from sakura_data.stage import DatasetStage

    register("dataset", DatasetStage())


@hookimpl
def sakura_register_dataset_adapters(register):
    from sakura_data.adapters import BUILTIN_ADAPTERS

    for name, adapter in BUILTIN_ADAPTERS.items():
        register(name, adapter)

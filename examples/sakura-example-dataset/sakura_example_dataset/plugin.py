"""The hooks sakura calls (the package's entry point): cheap to import, the adapter is imported in the hook."""

from sakura_core import hookimpl


@hookimpl
def sakura_register_dataset_adapters(register):
    from sakura_example_dataset.adapter import UltraFeedbackAdapter

    register("ultrafeedback", UltraFeedbackAdapter())

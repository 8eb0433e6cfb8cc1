"""Built-in plugin sakura_data: the ``dataset`` stage kind and dataset adapters.

Third-party adapters subclass ``sakura_data.Adapter`` (see ``sakura_data.contract``) and register an instance
from ``sakura_register_dataset_adapters``.
"""

__all__ = ["Adapter", "Skip", "WrongType", "preference", "text"]


def __getattr__(name: str):
    # Lazy, so that importing the plugin module (every CLI start) does not import pydantic.
    if name in __all__:
        from sakura_data import contract

        return getattr(contract, name)
    raise AttributeError(name)

"""Built-in plugin sakura_data: the ``dataset`` stage kind and dataset adapters.

Third-party adapters subclass ``sakura_data.Adapter`` and register it from
``sakura_register_dataset_adapters``.
"""

from sakura_data.adapters import Adapter, Skip, preference

__all__ = ["Adapter", "Skip", "preference"]

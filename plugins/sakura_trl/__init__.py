"""Built-in plugin sakura_trl: the ``train`` stage kind and the ``dpo`` / ``sft`` trainers.

Third-party trainers subclass ``sakura_trl.Trainer`` (see ``sakura_trl.contract``), or a built-in one such as
``sakura_trl.trainers.DPO``, and register an instance from ``sakura_register_trainers``.
"""

__all__ = ["Trainer", "TrainJob"]


def __getattr__(name: str):
    # Lazy, so that importing the plugin module (every CLI start) does not import the contract.
    if name in __all__:
        from sakura_trl import contract

        return getattr(contract, name)
    raise AttributeError(name)

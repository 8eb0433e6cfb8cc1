"""Built-in plugin sakura_merge: the ``merge`` stage kind, the merge methods and ``sakura merge``.

Third-party merge methods subclass ``sakura_merge.MergeMethod`` (see ``sakura_merge.contract``) and register
an instance from ``sakura_register_merge_methods``.
"""

__all__ = ["MergeCall", "MergeMethod"]


def __getattr__(name: str):
    # Lazy, so that importing the plugin module (every CLI start) does not import pydantic.
    if name in __all__:
        from sakura_merge import contract

        return getattr(contract, name)
    raise AttributeError(name)

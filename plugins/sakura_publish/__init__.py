"""Built-in plugin sakura_publish: the ``publish`` stage kind and the ``local`` publisher.

Third-party publishers subclass ``sakura_publish.Publisher`` (see ``sakura_publish.publisher``) and register
an instance from ``sakura_register_publishers``.
"""

__all__ = ["Bundle", "Publisher", "PublishEnv"]


def __getattr__(name: str):
    # Lazy, so that importing the plugin module (every CLI start) does not import pydantic.
    if name in __all__:
        from sakura_publish import publisher

        return getattr(publisher, name)
    raise AttributeError(name)

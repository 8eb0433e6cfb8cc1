from sakura_core import hookimpl  # noqa: F401

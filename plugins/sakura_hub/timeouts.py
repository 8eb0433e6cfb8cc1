"""Timeouts on every Hub call sakura makes (or datasets and transformers make for it).

huggingface_hub's shared HTTP client waits forever by default: a server that accepts a request and never
answers keeps a run waiting with no end. ``ensure()`` gives that client a connect and a read/write timeout,
so such a call fails like any other transient error (the publisher retries it) and then ends in one line.
Calls that pass their own ``timeout=`` keep it.

- ``SAKURA_HUB_CONNECT_TIMEOUT``: seconds to open a connection (default 10).
- ``SAKURA_HUB_TIMEOUT``: seconds to wait for the server to answer or accept the next piece of an upload
  (default 120: a multi-GB upload streams in pieces, each of which is bounded, not the whole transfer; a
  large commit may take the Hub a minute to answer).
"""

from __future__ import annotations

import os

from sakura_core.errors import SakuraError

DEFAULT_CONNECT = 10.0
DEFAULT_READ = 120.0
_installed = False


def seconds(variable: str, default: float) -> float:
    raw = os.environ.get(variable)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise SakuraError(f"{variable}={raw!r}: must be a number of seconds above 0")
    return value


def ensure() -> None:
    """Give huggingface_hub's shared client the timeouts above (once per process)."""
    global _installed
    if _installed:
        return
    import httpx2
    from huggingface_hub import set_client_factory

    # huggingface_hub's own factory (its request hook: offline mode, request ids) with a timeout added;
    # the factory is not exported, so fall back to plain httpx if its place ever changes.
    try:
        from huggingface_hub.utils._http import default_client_factory
    except ImportError:  # pragma: no cover - another huggingface_hub layout
        def default_client_factory() -> httpx2.Client:
            return httpx2.Client(follow_redirects=True)

    read = seconds("SAKURA_HUB_TIMEOUT", DEFAULT_READ)
    timeout = httpx2.Timeout(read, connect=seconds("SAKURA_HUB_CONNECT_TIMEOUT", DEFAULT_CONNECT))

    def factory() -> httpx2.Client:
        client = default_client_factory()
        client.timeout = timeout
        return client

    set_client_factory(factory)
    _installed = True

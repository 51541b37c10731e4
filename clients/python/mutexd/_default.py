"""The client behind the module-level functions: one per (MUTEXD_URL,
MUTEXD_TOKEN), read when a function is called, so a program that changes
its environment (or a test) talks to the server it names."""

import os
import threading

from ._client import DEFAULT_URL, Client

_mu = threading.Lock()  # guards _clients
_clients = {}


def default_client():
    """default_client returns the shared Client for MUTEXD_URL (default
    http://127.0.0.1:7070) and MUTEXD_TOKEN."""
    url = os.environ.get("MUTEXD_URL") or DEFAULT_URL
    token = os.environ.get("MUTEXD_TOKEN") or None
    with _mu:
        c = _clients.get((url, token))
        if c is None:
            c = _clients[(url, token)] = Client(url, token)
        return c

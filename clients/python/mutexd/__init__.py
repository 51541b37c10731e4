"""mutexd: the Python client of mutexd, the lock server (standard library
only).

    import mutexd

    with mutexd.lock("invoice:42", ttl="30s") as lease:
        charge(invoice, fence=lease.fence)

The module-level functions use the server named by MUTEXD_URL (default
http://127.0.0.1:7070) with the bearer token MUTEXD_TOKEN; Client(url,
token) is the explicit form, and mutexd.aio the asyncio one. Every error is
a MutexdError subclass carrying the server's code, message and status.
"""

from ._client import DEFAULT_URL, Client, Lease, safety_margin
from ._decorator import locked
from ._default import default_client
from ._errors import (Aborted, Cancelled, FencesExhausted, Forbidden, InternalError,
                      InvalidRequest, LeaseLost, LockTimeout, MutexdError, NotFound,
                      NotHeld, NotHolder, Overloaded, TooManyKeys, TooManyRequests,
                      TooManySubscribers, TooManyWaiters, TransportError, Unauthorized,
                      Unavailable, Unreachable, Superseded, LeaseEnded, LimitMismatch,
                      MaxHoldReached, Drained, StaleFence)
from . import aio

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL", "Client", "Lease", "safety_margin", "default_client", "aio",
    "acquire", "lock", "locked", "renew", "release", "inspect", "list", "force_release",
    "MutexdError", "LockTimeout", "Aborted", "NotHolder", "NotHeld", "Overloaded",
    "TooManyWaiters", "TooManyKeys", "TooManySubscribers", "Unavailable",
    "TooManyRequests", "FencesExhausted", "Unreachable", "TransportError",
    "Unauthorized", "Forbidden", "InvalidRequest", "NotFound", "InternalError",
    "Cancelled", "LeaseLost", "Superseded", "LeaseEnded", "LimitMismatch",
    "MaxHoldReached", "Drained", "StaleFence",
]


def acquire(key, *, ttl=None, wait=None, owner=None, on_error=None, cancel=None):
    """acquire: Client.acquire on the MUTEXD_URL/MUTEXD_TOKEN client."""
    return default_client().acquire(key, ttl=ttl, wait=wait, owner=owner,
                                    on_error=on_error, cancel=cancel)


def lock(key, *, ttl=None, wait=None, owner=None, on_error=None):
    """lock: Client.lock on the MUTEXD_URL/MUTEXD_TOKEN client: ``with
    mutexd.lock(key, ttl="30s") as lease:`` renews in the background and
    releases with outcome "failed" if the block raises."""
    return default_client().lock(key, ttl=ttl, wait=wait, owner=owner, on_error=on_error)


def renew(key, token, ttl=None):
    """renew: Client.renew on the MUTEXD_URL/MUTEXD_TOKEN client."""
    return default_client().renew(key, token, ttl)


def release(key, token, outcome="ok"):
    """release: Client.release on the MUTEXD_URL/MUTEXD_TOKEN client."""
    return default_client().release(key, token, outcome)


def inspect(key):
    """inspect: Client.inspect on the MUTEXD_URL/MUTEXD_TOKEN client."""
    return default_client().inspect(key)


def list(prefix=None):  # noqa: A001 - mirrors the API's name
    """list: Client.list on the MUTEXD_URL/MUTEXD_TOKEN client."""
    return default_client().list(prefix)


def force_release(key):
    """force_release: Client.force_release on the MUTEXD_URL/MUTEXD_TOKEN
    client (admin token when auth is on)."""
    return default_client().force_release(key)

"""mutexd.aio: the asyncio variant, without dependencies.

Each call runs the blocking client in a thread; a waiting acquire gets a
thread of its own (so many waiters never starve the loop's default
executor). Cancelling the awaiting task sets the acquire's cancel event:
the thread half-closes the connection, the server drops the waiter at
once, and a grant that raced with the cancellation is released before the
CancelledError continues. Renewals run in the lease's keep-alive thread, as
in the blocking client, so a busy or blocked event loop cannot starve them.

    async with mutexd.aio.lock("invoice:42", ttl="30s") as lease:
        await charge(invoice, fence=lease.fence)
"""

import asyncio
import threading

from ._client import DEFAULT_URL, Client, _finish
from ._decorator import locked as _locked

__all__ = ["AsyncClient", "AsyncLease", "acquire", "lock", "locked", "inspect",
           "list", "renew", "release", "force_release"]


def _run_in_thread(fn, *args, **kwargs):
    """_run_in_thread runs fn in a new daemon thread and returns a future of
    its result on the running loop."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(ok, value):
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run():
        try:
            result = (True, fn(*args, **kwargs))
        except BaseException as e:  # handed to the awaiting task
            result = (False, e)
        try:
            loop.call_soon_threadsafe(settle, *result)
        except RuntimeError:
            pass  # the loop is closed; nobody awaits any more
    threading.Thread(target=run, name="mutexd-aio", daemon=True).start()
    return fut


class AsyncLease:
    """AsyncLease is a Lease whose renew, release and fail are awaitable.
    Its other attributes (key, token, fence, owner, waited, previous, ttl,
    expires_at, lost, error) are the blocking Lease's; ``lost`` is a
    threading.Event, so ``lease.lost.is_set()`` is a cheap check."""

    def __init__(self, lease):
        self.sync = lease

    def __getattr__(self, name):
        return getattr(self.sync, name)

    def __repr__(self):
        return repr(self.sync)

    async def renew(self, ttl=None):
        """renew: see Lease.renew."""
        await asyncio.to_thread(self.sync.renew, ttl)

    async def release(self, outcome="ok"):
        """release: see Lease.release."""
        await asyncio.to_thread(self.sync.release, outcome)

    async def fail(self):
        """fail: see Lease.fail."""
        await asyncio.to_thread(self.sync.fail)

    def keep_alive(self):
        """keep_alive: see Lease.keep_alive (it renews in a thread)."""
        self.sync.keep_alive()


class AsyncClient:
    """AsyncClient is the asyncio face of a Client: the same arguments
    (``AsyncClient(url, token, ...)``), or an existing Client to share its
    connections (``AsyncClient(client)``)."""

    def __init__(self, url=DEFAULT_URL, token=None, **kwargs):
        self.sync = url if isinstance(url, Client) else Client(url, token, **kwargs)

    @classmethod
    def from_env(cls):
        """from_env wraps the shared client for MUTEXD_URL and MUTEXD_TOKEN."""
        from ._default import default_client
        return cls(default_client())

    def __repr__(self):
        return f"mutexd.aio.AsyncClient({self.sync.url!r})"

    async def acquire(self, key, *, ttl=None, wait=None, owner=None, on_error=None):
        """acquire: see Client.acquire; cancelling the task leaves the queue."""
        cancel = threading.Event()
        fut = _run_in_thread(self.sync.acquire, key, ttl=ttl, wait=wait, owner=owner,
                             on_error=on_error, cancel=cancel)
        try:
            return AsyncLease(await asyncio.shield(fut))
        except asyncio.CancelledError:
            cancel.set()
            # Let the thread half-close and hear the server's last word, so
            # the waiter is gone (and a raced grant released) before the
            # cancellation goes on.
            await asyncio.wait([fut])
            if not fut.cancelled() and fut.exception() is None:
                # Granted just before the cancel event was seen.
                try:
                    await asyncio.to_thread(fut.result().release)
                except Exception:
                    pass
            raise

    def lock(self, key, *, ttl=None, wait=None, owner=None, on_error=None):
        """lock: ``async with client.lock(key) as lease``; see Client.lock."""
        return _AsyncHeld(self, key, dict(ttl=ttl, wait=wait, owner=owner, on_error=on_error))

    def locked(self, key, **opts):
        """locked: see mutexd.locked."""
        return _locked(key, client=self.sync, **opts)

    async def renew(self, key, token, ttl=None):
        """renew: see Client.renew."""
        return await asyncio.to_thread(self.sync.renew, key, token, ttl)

    async def release(self, key, token, outcome="ok"):
        """release: see Client.release."""
        return await asyncio.to_thread(self.sync.release, key, token, outcome)

    async def inspect(self, key):
        """inspect: see Client.inspect."""
        return await asyncio.to_thread(self.sync.inspect, key)

    async def list(self, prefix=None):
        """list: see Client.list."""
        return await asyncio.to_thread(self.sync.list, prefix)

    async def force_release(self, key):
        """force_release: see Client.force_release."""
        return await asyncio.to_thread(self.sync.force_release, key)


class _AsyncHeld:
    def __init__(self, client, key, opts):
        self._client, self._key, self._opts = client, key, opts
        self.lease = None

    async def __aenter__(self):
        self.lease = await self._client.acquire(self._key, **self._opts)
        self.lease.keep_alive()
        return self.lease

    async def __aexit__(self, exc_type, exc, tb):
        # Shielded: a second cancellation must not skip the release.
        return await asyncio.shield(asyncio.to_thread(_finish, self.lease.sync, exc_type, exc))


def _default():
    return AsyncClient.from_env()


async def acquire(key, **opts):
    """acquire with the MUTEXD_URL/MUTEXD_TOKEN client; see AsyncClient."""
    return await _default().acquire(key, **opts)


def lock(key, **opts):
    """lock with the MUTEXD_URL/MUTEXD_TOKEN client: ``async with``."""
    return _default().lock(key, **opts)


def locked(key, **opts):
    """locked: see mutexd.locked (it handles coroutine functions too)."""
    return _locked(key, **opts)


async def renew(key, token, ttl=None):
    """renew with the MUTEXD_URL/MUTEXD_TOKEN client."""
    return await _default().renew(key, token, ttl)


async def release(key, token, outcome="ok"):
    """release with the MUTEXD_URL/MUTEXD_TOKEN client."""
    return await _default().release(key, token, outcome)


async def inspect(key):
    """inspect with the MUTEXD_URL/MUTEXD_TOKEN client."""
    return await _default().inspect(key)


async def list(prefix=None):  # noqa: A001 - mirrors the API's name
    """list with the MUTEXD_URL/MUTEXD_TOKEN client."""
    return await _default().list(prefix)


async def force_release(key):
    """force_release with the MUTEXD_URL/MUTEXD_TOKEN client."""
    return await _default().force_release(key)

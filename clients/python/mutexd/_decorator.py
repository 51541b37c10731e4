"""The @locked decorator: a function (or coroutine function) that runs
while holding a lock whose key may depend on its arguments."""

import functools
import inspect
import string


def _key_function(key, fn):
    """_key_function returns f(args, kwargs) -> the key for one call. key is
    a constant, a str.format template over the function's arguments
    ("invoice:{invoice_id}", "user:{user.id}", "{0}"), or a callable taking
    the function's arguments."""
    if callable(key):
        return lambda args, kwargs: key(*args, **kwargs)
    if not isinstance(key, str) or not key:
        raise TypeError(f"locked: the key must be a non-empty string or a callable; got {key!r}")
    fields = [f for _, f, _, _ in string.Formatter().parse(key) if f is not None]
    if not fields:
        return lambda args, kwargs: key
    sig = inspect.signature(fn)
    for field in fields:
        name = field.split(".", 1)[0].split("[", 1)[0]
        if name and not name.isdigit() and name not in sig.parameters:
            raise TypeError(f"locked: the key {key!r} names {{{name}}}, which is not a "
                            f"parameter of {fn.__qualname__}{sig}")

    def key_for(args, kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return key.format(*args, **bound.arguments)
    return key_for


def locked(key, *, client=None, ttl=None, wait=None, owner=None, on_error=None):
    """locked decorates a function so that every call runs while holding the
    lock on key, as inside ``with lock(key, ...)``: the lease is renewed in
    the background, released with outcome "failed" when the function
    raises and "ok" otherwise, and LeaseLost is raised after a successful
    call whose lease was lost. The key may be a template of the function's
    arguments::

        @mutexd.locked("invoice:{invoice_id}", ttl="30s")
        def charge(invoice_id, amount): ...

    A coroutine function is locked with the asyncio client. ``client`` is a
    Client (default: the one for MUTEXD_URL and MUTEXD_TOKEN, looked up at
    each call)."""
    opts = dict(ttl=ttl, wait=wait, owner=owner, on_error=on_error)

    def decorate(fn):
        key_for = _key_function(key, fn)
        if inspect.iscoroutinefunction(fn):
            from .aio import AsyncClient

            @functools.wraps(fn)
            async def run_async(*args, **kwargs):
                c = AsyncClient(client) if client is not None else AsyncClient.from_env()
                async with c.lock(key_for(args, kwargs), **opts):
                    return await fn(*args, **kwargs)
            return run_async

        @functools.wraps(fn)
        def run(*args, **kwargs):
            if client is not None:
                c = client
            else:
                from ._default import default_client
                c = default_client()
            with c.lock(key_for(args, kwargs), **opts):
                return fn(*args, **kwargs)
        return run
    return decorate

"""Typed exceptions for every error the mutexd API answers with.

Every exception is a MutexdError carrying the server's ``code`` and
``message``, the HTTP ``status`` (None for failures that never got an
answer), and ``request_id`` so the server's logs can be searched. The
mapping from an answer to a class lives in one place: ``from_answer``.
"""

import json


class MutexdError(Exception):
    """MutexdError is the base of every error this package raises about the
    server or the lock: catch it to handle them all."""

    #: the code used when a client-side error has no server answer
    default_code = "error"

    def __init__(self, message, *, code=None, status=None, waiters=None,
                 retry_after=None, request_id=None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status = status
        self.waiters = waiters
        self.retry_after = retry_after
        self.request_id = request_id

    def __str__(self):
        text = self.message.rstrip(".")
        if self.status is not None:
            return f"{text} ({self.status} {self.code})"
        return f"{text} ({self.code})"

    def __reduce__(self):
        # Exceptions cross process and thread boundaries (multiprocessing,
        # concurrent.futures): keep the keyword-only fields when pickled.
        return (_rebuild, (type(self), self.message, self.code, self.status,
                           self.waiters, self.retry_after, self.request_id))


def _rebuild(cls, message, code, status, waiters, retry_after, request_id):
    return cls(message, code=code, status=status, waiters=waiters,
               retry_after=retry_after, request_id=request_id)


class LockTimeout(MutexdError, TimeoutError):
    """LockTimeout: the lock was not granted within the acquire's wait (423
    timeout); a try-lock (wait=0) on a held key raises it at once.
    ``waiters`` is the queue length the server reported."""

    default_code = "timeout"


class Aborted(MutexdError):
    """Aborted: the wait ended because the holder of an on_error="stop" key
    failed (409 aborted), as the in-process mutex cancels its queue."""

    default_code = "aborted"


class NotHolder(MutexdError):
    """NotHolder: the token is not the key's live lease any more: it
    expired, was released or force-released, or is wrong (409 not_holder)."""

    default_code = "not_holder"


class Superseded(MutexdError):
    """Superseded: a later acquire with the same request_id took this one's
    place in the queue (409 superseded)."""

    default_code = "superseded"


class LeaseEnded(MutexdError):
    """LeaseEnded: the acquire was sent again with its request_id after the
    lease it had been granted ended (409 lease_ended)."""

    default_code = "lease_ended"


class LimitMismatch(MutexdError):
    """LimitMismatch: the acquire's limit differs from the one the key's
    holders and waiters use (409 limit_mismatch)."""

    default_code = "limit_mismatch"


class MaxHoldReached(MutexdError):
    """MaxHoldReached: a renewal would push the lease past its max_hold (409
    max_hold_reached); it stays live until then and is not renewed."""

    default_code = "max_hold_reached"


class Drained(MutexdError):
    """Drained: an operator emptied the key's queue (409 drained)."""

    default_code = "drained"


class StaleFence(MutexdError):
    """StaleFence: the fence is not a live lease of the key (409
    stale_fence)."""

    default_code = "stale_fence"


class NotHeld(MutexdError):
    """NotHeld: a force-release found nobody holding the key (404
    not_held)."""

    default_code = "not_held"


class Overloaded(MutexdError):
    """Overloaded is the base of the 429 limits: retry later
    (``retry_after`` seconds, when the server said)."""

    default_code = "overloaded"


class TooManyWaiters(Overloaded):
    """TooManyWaiters: the server's waiter limit is reached (429
    too_many_waiters)."""

    default_code = "too_many_waiters"


class TooManyKeys(Overloaded):
    """TooManyKeys: the server's active-key limit is reached (429
    too_many_keys)."""

    default_code = "too_many_keys"


class TooManySubscribers(Overloaded):
    """TooManySubscribers: too many event streams are open (429
    too_many_subscribers)."""

    default_code = "too_many_subscribers"


class Unavailable(MutexdError):
    """Unavailable: the server is not serving right now (503: shutting down,
    inside lock.restart_grace, too many requests), or could not be reached
    (Unreachable). The client retries these itself before raising."""

    default_code = "unavailable"


class TooManyRequests(Unavailable):
    """TooManyRequests: limits.max_requests requests are being served (503
    too_many_requests)."""

    default_code = "too_many_requests"


class FencesExhausted(Unavailable):
    """FencesExhausted: every fence up to 2^53-1 has been issued (503
    fences_exhausted); it never goes away, so it is not retried."""

    default_code = "fences_exhausted"


class Unreachable(Unavailable, ConnectionError):
    """Unreachable: no connection could be made, so the request certainly
    never reached the server (no status)."""

    default_code = "unreachable"


class TransportError(MutexdError, ConnectionError):
    """TransportError: the connection failed after the request was sent, or
    no answer came in time. The request may have reached the server, so it
    is not retried (an acquire may even have been granted: that lease then
    expires after its TTL)."""

    default_code = "transport"


class Unauthorized(MutexdError):
    """Unauthorized: the server requires a bearer token and got none or a
    wrong one (401)."""

    default_code = "unauthorized"


class Forbidden(MutexdError):
    """Forbidden: the token may not make this call; it needs an admin token
    (403)."""

    default_code = "forbidden"


class InvalidRequest(MutexdError, ValueError):
    """InvalidRequest: a parameter was refused, by the server (any 400:
    invalid_key, invalid_ttl, invalid_parameter, ..., and 413
    body_too_large) or by the client before sending."""

    default_code = "invalid_request"


class NotFound(MutexdError):
    """NotFound: no such route or method (404 not_found, 405
    method_not_allowed): a proxy or a path prefix is probably wrong."""

    default_code = "not_found"


class InternalError(MutexdError):
    """InternalError: the server failed (500 internal); it logged why."""

    default_code = "internal"


class Cancelled(MutexdError):
    """Cancelled: the caller cancelled a waiting acquire; the server dropped
    the waiter, and a grant that raced with the cancellation was released."""

    default_code = "cancelled"


class LeaseLost(MutexdError):
    """LeaseLost: the lease can no longer be proven live: a renewal was
    refused (it expired or was force-released), or none succeeded before
    the local deadline minus the safety margin. Work done under it may not
    have been alone; fences are the protection downstream."""

    default_code = "lease_lost"


# The one mapping from the API's codes to classes; statuses catch codes a
# newer server may add.
_BY_CODE = {
    "timeout": LockTimeout,
    "aborted": Aborted,
    "not_holder": NotHolder,
    "superseded": Superseded,
    "lease_ended": LeaseEnded,
    "limit_mismatch": LimitMismatch,
    "max_hold_reached": MaxHoldReached,
    "drained": Drained,
    "stale_fence": StaleFence,
    "not_held": NotHeld,
    "too_many_waiters": TooManyWaiters,
    "too_many_keys": TooManyKeys,
    "too_many_subscribers": TooManySubscribers,
    "unavailable": Unavailable,
    "too_many_requests": TooManyRequests,
    "fences_exhausted": FencesExhausted,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "method_not_allowed": NotFound,
    "body_too_large": InvalidRequest,
    "internal": InternalError,
    "cancelled": Cancelled,
}
_BY_STATUS = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: NotFound,
    409: NotHolder,
    413: InvalidRequest,
    423: LockTimeout,
    429: Overloaded,
    500: InternalError,
    503: Unavailable,
}

_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 409: "Conflict", 423: "Locked",
            429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


def from_answer(status, headers, body):
    """from_answer builds the exception for a non-2xx answer from its status,
    headers (a mapping with .get) and body bytes. A body that is not a mutexd
    error (a proxy's page) gets the code "http_<status>"."""
    code = message = waiters = None
    try:
        data = json.loads(body.decode("utf-8"))
        if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"]:
            code = data["error"]
            if isinstance(data.get("message"), str):
                message = data["message"]
            if isinstance(data.get("waiters"), int):
                waiters = data["waiters"]
    except (ValueError, UnicodeDecodeError):
        pass
    cls = _BY_CODE.get(code) if code else None
    if cls is None:
        cls = _BY_STATUS.get(status, MutexdError)
        if code is None:
            code = f"http_{status}"
    if not message:
        message = _REASONS.get(status, "Unexpected status") + "."
    return cls(message, code=code, status=status, waiters=waiters,
               retry_after=_retry_after(headers.get("Retry-After")),
               request_id=headers.get("X-Request-Id"))


def _retry_after(value):
    """_retry_after reads Retry-After as seconds (mutexd sends delay
    seconds); anything else is None."""
    if not value:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        return None
    return float(n) if n >= 0 else None

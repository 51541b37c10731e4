"""The blocking client: HTTP calls, retries, leases and their keep-alive.

Three decisions follow the Go client (client/DESIGN.md in the repository):

1. A lease's local deadline is a safe lower bound of the server's expiry,
   measured on the monotonic clock from when the grant or renewal was
   *sent* (plus the grant's waited_ms). ``lease.lost`` is set a safety
   margin (a tenth of the TTL, at most 5 s) before that deadline passes
   without a successful renewal, or at once when a renewal is refused.
2. Retries never leave a lease behind: a connection that could not be
   made and 503 answers are retried, and an acquire carries a fresh
   request_id the server deduplicates, so one whose answer was lost is sent
   again with it and gets the lease already granted or the first attempt's
   place in the queue (its lease is measured from when the first attempt
   that got no answer was sent). ``Client(request_id_param=False)`` is for
   servers older than request_id (they reject the parameter); then an
   acquire that may have been received is never sent twice.
3. Cancelling a waiting acquire half-closes its connection: the server
   reads EOF and drops the waiter at once, while an answer it already wrote
   can still be read; a grant that raced with the cancellation is released.
   The server keeps a waiter with a request_id in its place for a while in
   case its caller comes back, so the acquire is then also withdrawn: sent
   once more with a wait of 1 ms, which takes the waiter's place and times
   out, or claims a grant that is then released.
"""

import base64
import http.client
import json
import os
import random
import select
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timezone

from . import _durations
from ._errors import (Cancelled, FencesExhausted, InvalidRequest, LeaseLost,
                      MutexdError, NotHolder, TransportError, Unavailable,
                      Unreachable, from_answer)

#: DEFAULT_URL is where the sidecar daemon listens by default.
DEFAULT_URL = "http://127.0.0.1:7070"

# How long a cancelled long poll waits for the server's last word after
# half-closing (as the Go client's cancelGrace).
_CANCEL_GRACE = 2.0
# How often a waiting acquire checks its cancel event.
_CANCEL_POLL = 0.05
# The read timeout of an acquire that names no wait: the server's default
# lock.max_wait (10m) plus the call timeout.
_UNKNOWN_WAIT = 600.0
# Idle keep-alive connections older than this are not reused (the server
# closes them after limits.idle_timeout, 2m by default).
_IDLE_REUSE = 50.0
_MAX_IDLE = 16
_MAX_BODY = 8 << 20
_ORPHAN_RELEASE_TIMEOUT = 5.0


def safety_margin(ttl):
    """safety_margin is how long before its deadline a lease of ttl seconds
    that could not be renewed counts as lost: a tenth of the TTL, at most
    5 s. It gives a holder time to stop before the server may grant the key
    to someone else."""
    return min(ttl / 10.0, 5.0)


class _Answer:
    __slots__ = ("status", "headers", "body", "sent_at", "cancelled")

    def __init__(self, status, headers, body, sent_at, cancelled=False):
        self.status, self.headers, self.body = status, headers, body
        self.sent_at, self.cancelled = sent_at, cancelled

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise TransportError(f"malformed answer from the server: {e}",
                                 status=self.status,
                                 request_id=self.headers.get("X-Request-Id")) from None


class Client:
    """Client talks to one mutexd server. It is safe to share between
    threads; it keeps a small pool of keep-alive connections.

    ``url`` is ``http://host:port`` or ``https://host:port``, optionally
    with a path prefix; a ``user:password@`` in it is sent as Basic
    authentication (for a proxy) when no token is given, and is shown as
    ``user:xxxxx@`` in every message. ``token`` is sent as ``Authorization:
    Bearer``. ``timeout`` bounds each call (connect and answer); a waiting
    acquire gets its wait on top. ``max_attempts`` bounds the tries of a
    call that certainly did not reach the server or got a 503.
    ``request_id_param`` (on by default) sends each acquire's id as the
    ``request_id`` parameter and lets an acquire whose fate is unknown be
    retried with the same id; turn it off only for a server older than the
    parameter, which rejects it.
    """

    def __init__(self, url=DEFAULT_URL, token=None, *, owner=None, timeout=30.0,
                 max_attempts=6, min_backoff=0.1, max_backoff=2.0,
                 ssl_context=None, request_id_param=True):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise InvalidRequest(f"the server URL {_redact(url)!r} must be http:// or https:// "
                                 "with a host and no query", code="invalid_url")
        try:
            port = parts.port
        except ValueError:
            raise InvalidRequest(f"the server URL {_redact(url)!r} has a bad port",
                                 code="invalid_url") from None
        if token is not None and not isinstance(token, str):
            raise InvalidRequest("the token must be a string", code="invalid_token")
        if token and any(c in token for c in "\r\n"):
            # Never echo the token itself.
            raise InvalidRequest("the token contains a line break", code="invalid_token")
        if max_attempts < 1 or min_backoff < 0 or max_backoff < min_backoff:
            raise InvalidRequest("need max_attempts >= 1 and 0 <= min_backoff <= max_backoff",
                                 code="invalid_retry")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._shown = _redact(url).rstrip("/")
        self._auth = None
        if token:
            self._auth = "Bearer " + token
        elif parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            pw = urllib.parse.unquote(parts.password or "")
            self._auth = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        self.owner = owner
        self.timeout = float(timeout)
        self._max_attempts = max_attempts
        self._min_backoff, self._max_backoff = min_backoff, max_backoff
        self._ssl = ssl_context
        self._request_id_param = request_id_param
        self._mu = threading.Lock()  # guards the following
        self._idle = []  # (connection, monotonic time it went idle), newest last

    @classmethod
    def from_env(cls, **kwargs):
        """from_env returns a client for MUTEXD_URL (default
        http://127.0.0.1:7070, the sidecar) with MUTEXD_TOKEN, if set."""
        return cls(os.environ.get("MUTEXD_URL") or DEFAULT_URL,
                   os.environ.get("MUTEXD_TOKEN") or None, **kwargs)

    @property
    def url(self):
        """url is the server's address, with any password redacted."""
        return self._shown

    def __repr__(self):
        return f"mutexd.Client({self._shown!r})"

    def close(self):
        """close closes the idle connections; the client stays usable."""
        with self._mu:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    # ----- the API --------------------------------------------------------

    def acquire(self, key, *, ttl=None, wait=None, owner=None, on_error=None, cancel=None,
                request_id=None):
        """acquire waits in the key's FIFO queue until the lock is granted
        and returns the Lease. It raises LockTimeout when ``wait`` passes
        (wait=0 tries once), Aborted when an on_error="stop" holder failed,
        or Cancelled when the ``cancel`` threading.Event is set meanwhile:
        the connection is half-closed, the server drops the waiter at once,
        and a grant that raced with the cancellation is released.

        ``ttl`` and ``wait`` are seconds or durations ("30s", "1500ms");
        left out, the server's defaults apply. The lease is not renewed:
        call lease.keep_alive(), or use lock() instead.

        ``request_id`` (1 to 64 printable ASCII characters; a fresh random
        one by default) makes the acquire idempotent: sent again with the
        same id, it gets the lease the first was granted, or the first's
        place in the queue; LeaseEnded once that lease has ended."""
        path = _key_path(key, "/acquire")
        body = {}
        if ttl is not None:
            t = _durations.seconds(ttl, "ttl")
            if t <= 0:
                raise InvalidRequest(f"ttl must be positive; got {ttl!r}.", code="invalid_ttl")
            body["ttl"] = _durations.api(t)
        wait_s = _UNKNOWN_WAIT
        if wait is not None:
            wait_s = _durations.seconds(wait, "wait")
            body["wait"] = _durations.api(wait_s)
        owner = owner if owner is not None else self.owner
        if owner is not None:
            body["owner"] = owner
        if on_error is not None:
            body["on_error"] = on_error
        rid = request_id if request_id is not None else uuid.uuid4().hex
        sent_id = request_id is not None or self._request_id_param
        if sent_id:
            body["request_id"] = rid
        try:
            ans = self._call("POST", path, body=body, long_wait=wait_s, cancel=cancel,
                             request_id=rid, retry_sent=sent_id)
        except (TransportError, Cancelled):
            # No answer said what became of it: take it back (see above).
            if sent_id:
                self._withdraw(path, body)
            raise
        if ans.cancelled or (cancel is not None and cancel.is_set()):
            try:
                # The server answers a waiter that left with an empty body.
                grant = ans.json() if ans.status // 100 == 2 else None
            except TransportError:
                grant = None
            if isinstance(grant, dict) and grant.get("token"):
                # Granted as the caller gave up: nobody else would release it.
                lease = Lease(self, grant, ans.sent_at)
                try:
                    lease._release("ok", timeout=_ORPHAN_RELEASE_TIMEOUT)
                except MutexdError:
                    pass
            elif sent_id:
                self._withdraw(path, body)
            raise Cancelled(f"acquire {key}: cancelled while waiting; the server dropped the waiter")
        grant = ans.json()
        if not isinstance(grant, dict) or not isinstance(grant.get("token"), str) or not grant["token"]:
            raise TransportError(f"acquire {key}: malformed answer from the server: no token "
                                 "(the lease, if granted, expires after its TTL)", status=ans.status)
        return Lease(self, grant, ans.sent_at)

    def lock(self, key, *, ttl=None, wait=None, owner=None, on_error=None):
        """lock returns a context manager that acquires key on entry, renews
        the lease in a background thread every TTL/3 while the block runs,
        and releases it on exit: outcome "failed" when the block raised
        (any exception, KeyboardInterrupt included), "ok" otherwise. If the
        lease was lost meanwhile, leaving the block without an exception
        raises LeaseLost (the block may not have been alone); a failed
        release is raised too. The block gets the Lease (fence, lost)."""
        return _Held(self, key, dict(ttl=ttl, wait=wait, owner=owner, on_error=on_error))

    def locked(self, key, **opts):
        """locked is lock() as a decorator; see mutexd.locked."""
        from ._decorator import locked
        return locked(key, client=self, **opts)

    def renew(self, key, token, ttl=None):
        """renew extends the lease ``token`` of ``key`` to ``ttl`` from now
        (its own TTL when None) and returns the answer (key, fence, ttl_ms,
        expires_at). NotHolder: the lease is gone."""
        return self._renew(key, token, ttl).json()

    def release(self, key, token, outcome="ok"):
        """release ends the lease ``token`` of ``key`` with outcome "ok" or
        "failed" (waiters of an on_error="stop" holder are then Aborted)
        and returns the answer (key, fence, released, held_ms)."""
        return self._call("POST", _key_path(key, "/release"),
                          body={"token": token, "outcome": outcome}).json()

    def lease(self, key, token):
        """lease returns a handle to a lease granted elsewhere (such as to
        the command "mutexd lock" runs, through MUTEXD_KEY and
        MUTEXD_LEASE_TOKEN) to renew or release it. Its TTL and deadline
        are unknown until its first renewal."""
        return Lease(self, {"key": key, "token": token}, None)

    def inspect(self, key):
        """inspect returns the key's state: held, holder (owner, fence,
        acquired_at, expires_at, on_error) or None, waiters, queue."""
        return self._call("GET", _key_path(key, "")).json()

    def list_page(self, prefix=None, limit=None, after=None):
        """list_page returns one page of active keys and the cursor of the
        next ("" after the last page). Needs an admin token when auth is on."""
        query = {}
        if prefix:
            query["prefix"] = prefix
        if limit is not None:
            query["limit"] = str(limit)
        if after:
            query["after"] = after
        data = self._call("GET", "/v1/locks", query=query).json()
        return data.get("locks") or [], data.get("next") or ""

    def list(self, prefix=None):
        """list returns every active key (all pages), sorted by key: dicts
        with key, held, owner, waiters."""
        out, after = [], None
        while True:
            locks, after = self.list_page(prefix, 1000, after)
            out.extend(locks)
            if not after:
                return out

    def force_release(self, key):
        """force_release ends the key's lease, whoever holds it; the next
        waiter is granted (an operator's tool; admin token when auth is
        on). NotHeld: nobody held it."""
        return self._call("DELETE", _key_path(key, "")).json()

    # ----- internals ------------------------------------------------------

    def _withdraw(self, path, body):
        """_withdraw takes back an acquire with a request_id whose caller gave
        up or whose answer never came: the server would otherwise keep its
        place (or a grant) for the id's return until its detach grace ends.
        The same acquire with a wait of 1 ms takes that place and times out,
        or claims the grant, which is released. Best effort."""
        body = dict(body, wait="0ms" if body.get("wait") == "0ms" else "1ms")
        try:
            ans = self._call("POST", path, body=body, deadline=time.monotonic() + _ORPHAN_RELEASE_TIMEOUT)
            grant = ans.json()
            if isinstance(grant, dict) and grant.get("token"):
                Lease(self, grant, ans.sent_at)._release("ok", timeout=_ORPHAN_RELEASE_TIMEOUT)
        except MutexdError:
            pass

    def _renew(self, key, token, ttl, deadline=None):
        body = {"token": token}
        if ttl is not None:
            t = _durations.seconds(ttl, "ttl")
            if t <= 0:
                raise InvalidRequest(f"ttl must be positive; got {ttl!r}.", code="invalid_ttl")
            body["ttl"] = _durations.api(t)
        return self._call("POST", _key_path(key, "/renew"), body=body, deadline=deadline)

    def _backoff(self, n, retry_after):
        d = min(self._min_backoff * (2 ** n), self._max_backoff)
        d = d / 2 + random.uniform(0, d / 2)
        return max(d, min(retry_after or 0.0, self._max_backoff))

    def _call(self, method, path, *, body=None, query=None, long_wait=None,
              cancel=None, deadline=None, request_id=None, retry_sent=False):
        """_call sends one API call, retrying only what never reached the
        server or was answered 503 (and, with retry_sent, what carries an
        idempotency id), and returns the 2xx _Answer or raises."""
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request_id = request_id or uuid.uuid4().hex
        attempt = 0
        first_cut = None  # when the first attempt that got no answer was sent
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                ans = self._send(method, target, data, long_wait, cancel, deadline, request_id)
            except (Unreachable, TransportError) as e:
                if isinstance(e, TransportError) and not retry_sent:
                    raise
                if isinstance(e, TransportError) and first_cut is None:
                    first_cut = started
                err = e
            else:
                if ans.status // 100 == 2 or ans.cancelled:
                    if first_cut is not None:
                        # The retry is answered as the cut attempt (its
                        # lease, its place): measure from when that was sent.
                        ans.sent_at = min(ans.sent_at, first_cut)
                    return ans
                err = from_answer(ans.status, ans.headers, ans.body)
                if not isinstance(err, Unavailable) or isinstance(err, FencesExhausted):
                    raise err
            delay = self._backoff(attempt - 1, err.retry_after)
            if attempt >= self._max_attempts or (deadline is not None and time.monotonic() + delay >= deadline):
                if attempt > 1:
                    err.message += f" (gave up after {attempt} tries)"
                raise err
            if cancel is not None:
                if cancel.wait(delay):
                    raise Cancelled(f"{method} {self._shown}: cancelled while retrying ({err})")
            else:
                time.sleep(delay)

    def _connection(self, timeout):
        """_connection returns a pooled connection the server has not closed,
        or a new, unconnected one."""
        now = time.monotonic()
        with self._mu:
            while self._idle:
                conn, since = self._idle.pop()
                if now - since < _IDLE_REUSE and conn.sock is not None and not _readable(conn.sock):
                    conn.timeout = timeout
                    conn.sock.settimeout(timeout)
                    return conn
                conn.close()  # closed by the server, or about to be
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=self._ssl or ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _put_idle(self, conn):
        with self._mu:
            if len(self._idle) < _MAX_IDLE:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def _send(self, method, target, data, long_wait, cancel, deadline, request_id):
        """_send makes one attempt. It raises Unreachable when the request
        certainly was not sent, TransportError when it may have been, and
        returns any answer (2xx or not)."""
        timeout = self.timeout
        if deadline is not None:
            timeout = max(0.001, min(timeout, deadline - time.monotonic()))
        conn = self._connection(timeout)
        where = f"{method} {self._shown}"
        if conn.sock is None:
            try:
                conn.connect()
            except ssl.SSLError as e:
                # A refused certificate does not go away by retrying.
                conn.close()
                raise MutexdError(f"{where}: TLS handshake failed: {_describe(e)}", code="tls") from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise Unreachable(f"mutexd unreachable: {where}: {_describe(e)}") from None
        headers = {"Accept": "application/json", "X-Request-Id": request_id}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._auth:
            headers["Authorization"] = self._auth
        sent_at = time.monotonic()
        cancelled = False
        try:
            conn.request(method, target, body=data, headers=headers)
            if long_wait is not None:
                read_timeout = long_wait + self.timeout
                if deadline is not None:
                    read_timeout = max(0.001, min(read_timeout, deadline - time.monotonic()))
                conn.sock.settimeout(read_timeout)
                if cancel is not None:
                    cancelled = _await_answer(conn.sock, cancel, time.monotonic() + read_timeout)
            resp = conn.getresponse()
            body = resp.read(_MAX_BODY)
        except socket.timeout:
            conn.close()
            if cancelled:
                return _Answer(0, {}, b"", sent_at, cancelled=True)
            raise TransportError(f"{where}: no answer in time") from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            if cancelled:
                return _Answer(0, {}, b"", sent_at, cancelled=True)
            raise TransportError(f"{where}: {_describe(e)}") from None
        if cancelled or resp.will_close or not resp.isclosed():  # not resp.isclosed(): body over the limit
            conn.close()  # a half-closed connection cannot carry another request
        else:
            self._put_idle(conn)
        return _Answer(resp.status, resp.headers, body, sent_at, cancelled)


def _await_answer(sock, cancel, until):
    """_await_answer waits until the answer starts to arrive, and returns
    True when cancel was set first: the socket is then half-closed, so the
    server drops the waiter, and the caller reads its last word within the
    grace period."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return False
    while True:
        left = until - time.monotonic()
        if left <= 0:
            raise socket.timeout("no answer in time")
        readable, _, _ = select.select([sock], [], [], min(_CANCEL_POLL, left))
        if readable:
            return False
        if cancel.is_set():
            break
    if isinstance(sock, ssl.SSLSocket):
        # A TLS socket cannot be half-closed here (shutdown drops the TLS
        # state): close it; a grant that raced expires after its TTL.
        sock.close()
        return True
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.settimeout(_CANCEL_GRACE)
    return True


def _readable(sock):
    """_readable reports an idle connection with something to read: the
    server's EOF (it closed the connection) or stray bytes."""
    try:
        r, _, _ = select.select([sock], [], [], 0)
        return bool(r)
    except (OSError, ValueError):
        return True


def _describe(e):
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if not text.startswith(type(e).__name__) else text


def _redact(url):
    """_redact replaces the password of a URL with xxxxx."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:xxxxx@{netloc[2]}"))


def _key_path(key, suffix):
    if not isinstance(key, str) or key == "":
        raise InvalidRequest(f"the key must be a non-empty string; got {key!r}.", code="invalid_key")
    return "/v1/locks/" + urllib.parse.quote(key, safe="") + suffix


def _parse_time(value):
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None


class Lease:
    """Lease is a granted lock. ``key``, ``token``, ``fence``, ``owner``,
    ``waited`` (seconds) and ``previous`` (None when the key was free, else
    {"fence", "outcome"} of the lease before) never change; ``ttl`` and
    ``expires_at`` (the server's clock) change with renewals.

    ``lost`` is a threading.Event set when the lease can no longer be proven
    live: a renewal or release was refused (it expired or was force-
    released), or, while keep_alive runs, no renewal succeeded before the
    local deadline minus the safety margin. ``error`` then says why (a
    LeaseLost). Pass ``fence`` to the store you protect and have it reject
    writes with a lower fence than it has seen.
    """

    def __init__(self, client, grant, sent_at):
        self._client = client
        self.key = grant.get("key")
        self.token = grant.get("token")
        self.fence = grant.get("fence") or 0
        self.owner = grant.get("owner")
        self.waited = (grant.get("waited_ms") or 0) / 1000.0
        self.previous = grant.get("previous")
        self.lost = threading.Event()
        self._renewing = threading.Lock()  # one renewal at a time
        self._mu = threading.Lock()  # guards the following
        self.ttl = (grant.get("ttl_ms") or 0) / 1000.0
        self.expires_at = _parse_time(grant.get("expires_at"))
        # Local monotonic lower bound of the server's expiry; None until
        # known (a handle from Client.lease).
        self._deadline = sent_at + self.waited + self.ttl if sent_at is not None else None
        self.error = None
        self._ended = False
        self._renew_error = None
        self._stop = None  # threading.Event stopping the keep-alive
        self._thread = None

    def __repr__(self):
        return f"<mutexd.Lease key={self.key!r} fence={self.fence} owner={self.owner!r}>"

    @property
    def ended(self):
        """ended is True once release() or fail() succeeded."""
        with self._mu:
            return self._ended

    def remaining(self):
        """remaining returns the seconds left before the lease counts as
        lost unless renewed (local deadline minus safety margin), or None
        when unknown."""
        with self._mu:
            if self._deadline is None:
                return None
            return self._deadline - safety_margin(self.ttl) - time.monotonic()

    def _lose(self, why, cause=None):
        with self._mu:
            if self.error is not None or self._ended:
                return
            if cause is not None:
                why = f"{why}: {cause}"
            self.error = LeaseLost(f"lease lost: {self.key}: {why}")
            self.error.__cause__ = cause
        self.lost.set()

    def renew(self, ttl=None):
        """renew extends the lease to ttl (seconds or a duration; its own
        TTL when None) from now. A shorter ttl brings the expiry closer.
        NotHolder means the lease is gone; lost is then set."""
        self._renew(ttl, None)

    def _renew(self, ttl, deadline):
        t = None
        if ttl is not None:
            t = _durations.seconds(ttl, "ttl")
            if t <= 0:
                raise InvalidRequest(f"ttl must be positive; got {ttl!r}.", code="invalid_ttl")
        with self._renewing:
            sent = time.monotonic()
            try:
                ans = self._client._renew(self.key, self.token, ttl, deadline)
                data = ans.json()
            except NotHolder as e:
                self._lose("renewal refused", e)
                raise
            except MutexdError as e:
                with self._mu:
                    self._renew_error = e
                    # An unanswered renewal with a shorter TTL may still have
                    # shortened the lease on the server.
                    if (t is not None and e.status is None and not isinstance(e, Unreachable)
                            and self._deadline is not None):
                        self._deadline = min(self._deadline, sent + t)
                raise
            with self._mu:
                self.ttl = (data.get("ttl_ms") or 0) / 1000.0
                self.expires_at = _parse_time(data.get("expires_at"))
                self._deadline = ans.sent_at + self.ttl
                self._renew_error = None

    def keep_alive(self):
        """keep_alive renews the lease in a background thread every third of
        its TTL (sooner after a failure) until it is released or lost. It
        sets lost when a renewal is refused or none succeeded before the
        local deadline minus the safety margin. Calls after the first do
        nothing."""
        with self._mu:
            if self._thread is not None or self._ended or self.error is not None:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._keep_alive, args=(self._stop,),
                                            name=f"mutexd-keepalive {self.key}", daemon=True)
            self._thread.start()

    def stop_keep_alive(self):
        """stop_keep_alive stops the background renewals and waits for a
        renewal in flight to finish."""
        with self._mu:
            stop, thread = self._stop, self._thread
        if stop is not None:
            stop.set()
            if thread is not threading.current_thread():
                thread.join()

    def _keep_alive(self, stop):
        failing = False
        while True:
            if self.ttl == 0:  # a handle from Client.lease: learn the TTL first
                try:
                    self._renew(None, None)
                except MutexdError as e:
                    self._lose("the first renewal failed", e)
                    return
                continue
            with self._mu:
                ttl, deadline = self.ttl, self._deadline
            give_up = deadline - safety_margin(ttl)
            nxt = deadline - ttl + ttl / 3.0  # a third of the TTL after the last success
            if failing:
                nxt = time.monotonic() + min(max(ttl / 20.0, 0.02), 1.0)
            if stop.wait(max(0.0, min(nxt, give_up) - time.monotonic())):
                return
            if time.monotonic() >= give_up:
                with self._mu:
                    last = self._renew_error
                why = "no renewal succeeded before the lease's deadline"
                if last is not None:
                    why += "; last attempt"
                self._lose(why, last)
                return
            try:
                # A renewal still in flight at the deadline is as good as failed.
                self._renew(None, give_up)
                failing = False
            except NotHolder:
                return
            except MutexdError:
                failing = True
            if self.lost.is_set():
                return

    def release(self, outcome="ok"):
        """release ends the lease with outcome "ok" (or "failed"): the next
        waiter is granted at once. It stops keep_alive first. NotHolder
        means the lease had already ended (lost is then set)."""
        self._release(outcome)

    def fail(self):
        """fail ends the lease with outcome "failed": the next holder sees
        previous.outcome "failed", and on an on_error="stop" key every
        waiter queued at that moment gets Aborted."""
        self._release("failed")

    def _release(self, outcome, timeout=None):
        self.stop_keep_alive()
        deadline = time.monotonic() + timeout if timeout else None
        try:
            self._client._call("POST", _key_path(self.key, "/release"),
                               body={"token": self.token, "outcome": outcome}, deadline=deadline)
        except NotHolder as e:
            self._lose("release refused", e)
            raise
        with self._mu:
            self._ended = True


class _Held:
    """_Held is the context manager lock() returns."""

    def __init__(self, client, key, opts):
        self._client, self._key, self._opts = client, key, opts
        self.lease = None

    def __enter__(self):
        self.lease = self._client.acquire(self._key, **self._opts)
        self.lease.keep_alive()
        return self.lease

    def __exit__(self, exc_type, exc, tb):
        return _finish(self.lease, exc_type, exc)


def _finish(lease, exc_type, exc):
    """_finish releases lease after a block ended with exc (or None) and
    raises what the caller must hear: LeaseLost, or a failed release when the
    block succeeded."""
    lease.stop_keep_alive()
    rel_err = None
    if not lease.ended:
        try:
            lease._release("failed" if exc_type is not None else "ok")
        except MutexdError as e:
            rel_err = e
    if exc_type is not None:
        note = lease.error or rel_err
        if note is not None and hasattr(exc, "add_note"):
            exc.add_note(f"mutexd: {note}")
        return False
    if lease.error is not None:
        raise lease.error
    if rel_err is not None:
        raise rel_err
    return False

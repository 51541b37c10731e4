"""Errors that need a daemon configured for them: auth, limits, the
restart grace."""

import unittest
import uuid

import mutexd
from tests.daemon import Daemon

CLIENT_TOKEN = "client-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"


class AuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(AUTH_TOKENS=CLIENT_TOKEN, AUTH_ADMIN_TOKENS=ADMIN_TOKEN)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def client(self, token):
        c = mutexd.Client(self.d.url, token)
        self.addCleanup(c.close)
        return c

    def test_unauthorized_without_or_with_a_wrong_token(self):
        for token in (None, "wrong-token-but-very-secret"):
            with self.subTest(token=token):
                with self.assertRaises(mutexd.Unauthorized) as cm:
                    self.client(token).acquire("k", wait=0)
                e = cm.exception
                self.assertEqual((e.code, e.status), ("unauthorized", 401))
                self.assertNotIn("very-secret", str(e) + repr(e))

    def test_forbidden_for_a_client_token(self):
        c = self.client(CLIENT_TOKEN)
        with c.lock(f"a:{uuid.uuid4().hex}", wait=0) as lease:
            for call in (c.list, lambda: c.force_release(lease.key)):
                with self.assertRaises(mutexd.Forbidden) as cm:
                    call()
                self.assertEqual((cm.exception.code, cm.exception.status), ("forbidden", 403))
            # An admin token may.
            self.assertEqual(self.client(ADMIN_TOKEN).list("a:")[0]["key"], lease.key)

    def test_basic_auth_from_the_url_is_not_bearer(self):
        # A user:password in the URL is for a proxy: mutexd wants a bearer
        # token, and the error does not show the password.
        url = self.d.url.replace("http://", "http://ops:pw-verysecret@")
        c = mutexd.Client(url)
        self.addCleanup(c.close)
        with self.assertRaises(mutexd.Unauthorized) as cm:
            c.inspect("k")
        self.assertNotIn("pw-verysecret", str(cm.exception))


class LimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(LIMITS_MAX_KEYS=1, LIMITS_MAX_WAITERS_PER_KEY=1, LIMITS_ADMIN_RESERVE=0)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_too_many_keys_and_waiters(self):
        c = mutexd.Client(self.d.url)
        self.addCleanup(c.close)
        with c.lock("one", wait=0):
            with self.assertRaises(mutexd.TooManyKeys) as cm:
                c.acquire("two", wait=0)
            self.assertEqual((cm.exception.code, cm.exception.status), ("too_many_keys", 429))
            self.assertEqual(cm.exception.retry_after, 1.0)
            cancel = queue_one(c, "one")
            with self.assertRaises(mutexd.TooManyWaiters) as cm:
                c.acquire("one", wait="5s")
            self.assertEqual((cm.exception.code, cm.exception.status), ("too_many_waiters", 429))
            cancel()


def queue_one(c, key):
    """Queues one waiter on key in a thread; returns the function that
    cancels it and waits for it to leave."""
    import threading
    import time
    ev, t = threading.Event(), None

    def wait():
        try:
            c.acquire(key, wait="10s", cancel=ev)
        except mutexd.Cancelled:
            pass
    t = threading.Thread(target=wait)
    t.start()
    end = time.monotonic() + 5
    while c.inspect(key)["waiters"] != 1:
        assert time.monotonic() < end, "the waiter never queued"
        time.sleep(0.01)

    def cancel():
        ev.set()
        t.join(5)
    return cancel


class GraceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(LOCK_RESTART_GRACE="1m", LOCK_MAX_TTL="30s")

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_unavailable_is_retried_then_raised(self):
        c = mutexd.Client(self.d.url, max_attempts=3, min_backoff=0.01, max_backoff=0.05)
        self.addCleanup(c.close)
        with self.assertRaises(mutexd.Unavailable) as cm:
            c.acquire("k", wait=0)
        e = cm.exception
        self.assertIs(type(e), mutexd.Unavailable)
        self.assertEqual((e.code, e.status), ("unavailable", 503))
        self.assertGreater(e.retry_after, 50)
        self.assertIn("gave up after 3 tries", str(e))


if __name__ == "__main__":
    unittest.main()

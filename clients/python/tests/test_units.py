"""Tests that need no daemon: durations, the error mapping, redaction,
key templates."""

import datetime
import pickle
import unittest

import mutexd
from mutexd import _durations
from mutexd._errors import from_answer


class DurationTest(unittest.TestCase):
    def test_accepted(self):
        for value, want in [("30s", 30.0), ("1500ms", 1.5), ("2m", 120.0), ("1m30s", 90.0),
                            ("30", 30.0), (30, 30.0), (1.5, 1.5), (0, 0.0), ("1h", 3600.0),
                            ("250us", 0.00025), (datetime.timedelta(seconds=3), 3.0)]:
            with self.subTest(value=value):
                self.assertAlmostEqual(_durations.seconds(value, "ttl"), want)

    def test_refused(self):
        for value in ["", "abc", "30 s", "\u00b2", "\u0663s", "-1s", "1.5", "s", -1, float("inf"), True, None, [1]]:
            with self.subTest(value=value):
                with self.assertRaises(mutexd.InvalidRequest) as cm:
                    _durations.seconds(value, "wait")
                self.assertEqual(cm.exception.code, "invalid_wait")

    def test_api_form(self):
        self.assertEqual(_durations.api(1.5), "1500ms")
        self.assertEqual(_durations.api(30.0), "30000ms")


class Headers(dict):
    pass


class ErrorMappingTest(unittest.TestCase):
    """Every code the API answers with maps to its class, with code, message
    and status kept."""

    CASES = [
        (423, "timeout", mutexd.LockTimeout),
        (409, "aborted", mutexd.Aborted),
        (409, "not_holder", mutexd.NotHolder),
        (404, "not_held", mutexd.NotHeld),
        (429, "too_many_waiters", mutexd.TooManyWaiters),
        (429, "too_many_keys", mutexd.TooManyKeys),
        (429, "too_many_subscribers", mutexd.TooManySubscribers),
        (503, "unavailable", mutexd.Unavailable),
        (503, "too_many_requests", mutexd.TooManyRequests),
        (503, "fences_exhausted", mutexd.FencesExhausted),
        (401, "unauthorized", mutexd.Unauthorized),
        (403, "forbidden", mutexd.Forbidden),
        (404, "not_found", mutexd.NotFound),
        (405, "method_not_allowed", mutexd.NotFound),
        (413, "body_too_large", mutexd.InvalidRequest),
        (500, "internal", mutexd.InternalError),
        (499, "cancelled", mutexd.Cancelled),
        (400, "bad_request", mutexd.InvalidRequest),
        (400, "invalid_key", mutexd.InvalidRequest),
        (400, "invalid_ttl", mutexd.InvalidRequest),
        (400, "invalid_wait", mutexd.InvalidRequest),
        (400, "invalid_owner", mutexd.InvalidRequest),
        (400, "invalid_on_error", mutexd.InvalidRequest),
        (400, "invalid_parameter", mutexd.InvalidRequest),
        (400, "invalid_body", mutexd.InvalidRequest),
        (400, "invalid_outcome", mutexd.InvalidRequest),
        (400, "missing_token", mutexd.InvalidRequest),
        (400, "invalid_limit", mutexd.InvalidRequest),
        (400, "invalid_prefix", mutexd.InvalidRequest),
        (503, "some_future_503", mutexd.Unavailable),
        (429, "some_future_429", mutexd.Overloaded),
    ]

    def test_every_code(self):
        for status, code, cls in self.CASES:
            with self.subTest(code=code):
                body = ('{"error":"%s","message":"Words for %s."}' % (code, code)).encode()
                e = from_answer(status, Headers({"X-Request-Id": "r1", "Retry-After": "2"}), body)
                self.assertIs(type(e), cls)
                self.assertIsInstance(e, mutexd.MutexdError)
                self.assertEqual((e.status, e.code, e.message, e.request_id, e.retry_after),
                                 (status, code, f"Words for {code}.", "r1", 2.0))
                self.assertEqual(str(e), f"Words for {code} ({status} {code})")

    def test_builtin_bases(self):
        self.assertTrue(issubclass(mutexd.LockTimeout, TimeoutError))
        self.assertTrue(issubclass(mutexd.InvalidRequest, ValueError))
        self.assertTrue(issubclass(mutexd.Unreachable, ConnectionError))
        self.assertTrue(issubclass(mutexd.Unreachable, mutexd.Unavailable))

    def test_waiters(self):
        e = from_answer(423, Headers(), b'{"error":"timeout","message":"m","waiters":3}')
        self.assertEqual(e.waiters, 3)

    def test_not_a_mutexd_body(self):
        e = from_answer(502, Headers(), b"<html>bad gateway</html>")
        self.assertIs(type(e), mutexd.MutexdError)
        self.assertEqual((e.code, e.status, e.message), ("http_502", 502, "Bad Gateway."))
        e = from_answer(503, Headers(), b"")
        self.assertIsInstance(e, mutexd.Unavailable)
        self.assertEqual(e.code, "http_503")

    def test_pickles(self):
        e = from_answer(423, Headers({"X-Request-Id": "r"}), b'{"error":"timeout","message":"m","waiters":1}')
        back = pickle.loads(pickle.dumps(e))
        self.assertIs(type(back), mutexd.LockTimeout)
        self.assertEqual((back.code, back.status, back.waiters, back.request_id), ("timeout", 423, 1, "r"))


class RedactionTest(unittest.TestCase):
    def test_url_password(self):
        c = mutexd.Client("http://ops:hunter2secret@127.0.0.1:7070/prefix/")
        self.assertEqual(c.url, "http://ops:xxxxx@127.0.0.1:7070/prefix")
        self.assertNotIn("hunter2secret", repr(c))

    def test_bad_url_is_redacted(self):
        with self.assertRaises(mutexd.InvalidRequest) as cm:
            mutexd.Client("ftp://ops:hunter2secret@host/")
        self.assertNotIn("hunter2secret", str(cm.exception))

    def test_token_never_shown(self):
        with self.assertRaises(mutexd.InvalidRequest) as cm:
            mutexd.Client("http://127.0.0.1:1", "tok-supersecret\r\nX: y")
        self.assertNotIn("supersecret", str(cm.exception))
        c = mutexd.Client("http://127.0.0.1:1", "tok-supersecret-0123")
        self.assertNotIn("supersecret", repr(c))


class KeyTemplateTest(unittest.TestCase):
    def test_unknown_field_is_refused_at_decoration(self):
        with self.assertRaises(TypeError):
            @mutexd.locked("invoice:{invoice}")
            def charge(invoice_id):
                pass

    def test_bad_key(self):
        with self.assertRaises(mutexd.InvalidRequest):
            mutexd.Client("http://127.0.0.1:1").acquire("")


if __name__ == "__main__":
    unittest.main()

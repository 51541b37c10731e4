"""Tests against a real mutexd daemon built from this repository."""

import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

import mutexd
from tests.daemon import PACKAGE_ROOT, PYTHON, REPO_ROOT, Daemon, eventually, python_env

HERE = os.path.dirname(os.path.abspath(__file__))
daemon = None


def setUpModule():
    global daemon
    daemon = Daemon()


def tearDownModule():
    daemon.stop()


def read(path):
    with open(path) as f:
        return f.read()


def fresh_key(prefix="k"):
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


class Base(unittest.TestCase):
    def setUp(self):
        self.c = mutexd.Client(daemon.url)
        self.addCleanup(self.c.close)
        self.tmp = tempfile.mkdtemp(prefix="mutexd-py-test-")

    def waiters(self, key):
        return self.c.inspect(key)["waiters"]

    def spawn(self, key, name, out):
        p = subprocess.Popen([PYTHON, os.path.join(HERE, "worker.py"), key, name, out],
                             env=python_env(daemon.url), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        return p


class AcrossProcessesTest(Base):
    def test_fifo_across_two_processes(self):
        key, out = fresh_key("fifo"), os.path.join(self.tmp, "out")
        holder = self.c.acquire(key, ttl="10s")
        a = self.spawn(key, "A", out)
        eventually(lambda: self.waiters(key) == 1, 10, "A queued")
        b = self.spawn(key, "B", out)
        eventually(lambda: self.waiters(key) == 2, 10, "B queued")
        self.assertEqual([w["owner"] for w in self.c.inspect(key)["queue"]], ["A", "B"])
        holder.release()
        for p in (a, b):
            _, err = p.communicate(timeout=20)
            self.assertEqual(p.returncode, 0, err.decode())
        lines = [l.split() for l in read(out).splitlines()]
        self.assertEqual([l[1] for l in lines], ["A", "B"])
        fences = [holder.fence] + [int(l[2]) for l in lines]
        self.assertEqual(fences, sorted(fences))
        self.assertEqual(len(set(fences)), 3)

    def test_a_killed_waiter_leaves_the_queue(self):
        # A process that dies while waiting closes its socket: the server
        # drops the waiter, and the next one is granted in its place. Its
        # acquire carried a request_id, so the server keeps its place for
        # lock.detach_grace in case it comes back (1 s on this daemon;
        # 30 s by default), then drops it.
        d = Daemon(LOCK_DETACH_GRACE="1s")
        self.addCleanup(d.stop)
        c = mutexd.Client(d.url)
        self.addCleanup(c.close)
        key, out = fresh_key("killed"), os.path.join(self.tmp, "out")
        holder = c.acquire(key, ttl="10s")
        a = subprocess.Popen([PYTHON, os.path.join(HERE, "worker.py"), key, "A", out],
                             env=python_env(d.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: a.poll() is None and a.kill())
        eventually(lambda: c.inspect(key)["waiters"] == 1, 10, "A queued")
        a.kill()
        a.communicate(timeout=10)
        eventually(lambda: c.inspect(key)["waiters"] == 0, 5, "A gone from the queue")
        holder.release()
        self.assertFalse(os.path.exists(out))
        self.assertFalse(c.inspect(key)["held"])

    def test_on_error_stop_across_processes(self):
        key, out = fresh_key("stop"), os.path.join(self.tmp, "out")
        with self.assertRaises(RuntimeError):
            with self.c.lock(key, ttl="10s", on_error="stop"):
                a = self.spawn(key, "A", out)
                eventually(lambda: self.waiters(key) == 1, 10, "A queued")
                b = self.spawn(key, "B", out)
                eventually(lambda: self.waiters(key) == 2, 10, "B queued")
                raise RuntimeError("the work failed")
        for p in (a, b):
            _, err = p.communicate(timeout=20)
            self.assertEqual(p.returncode, 3, err.decode())
        self.assertEqual(sorted(read(out).split("\n")), ["", "aborted A", "aborted B"])
        state = self.c.inspect(key)
        self.assertEqual((state["held"], state["waiters"]), (False, 0))


class LockTest(Base):
    def test_parallel_keys(self):
        both = threading.Barrier(2, timeout=5)
        errors = []

        def work(key):
            try:
                with self.c.lock(key, ttl="5s", wait="5s"):
                    both.wait()  # both hold their locks at once
            except Exception as e:  # reported below
                errors.append(e)
        threads = [threading.Thread(target=work, args=(fresh_key("par"),)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(errors, [])

    def test_one_at_a_time_in_order(self):
        key, inside, order, overlap = fresh_key("seq"), [0], [], []
        holder = self.c.acquire(key)

        def work(i):
            with self.c.lock(key, wait="10s", owner=f"t{i}"):
                inside[0] += 1
                overlap.append(inside[0])
                order.append(i)
                time.sleep(0.01)
                inside[0] -= 1
        threads = []
        for i in range(4):
            threads.append(threading.Thread(target=work, args=(i,)))
            threads[-1].start()
            eventually(lambda: self.waiters(key) == i + 1, 5, f"waiter {i}")
        holder.release()
        for t in threads:
            t.join(10)
        self.assertEqual(order, [0, 1, 2, 3])
        self.assertEqual(max(overlap), 1)

    def test_ok_and_failed_outcomes(self):
        # The next holder, queued behind, hears how each lease ended.
        key = fresh_key("outcome")
        for fail, want in ((False, "released"), (True, "failed")):
            got = []
            t = None
            try:
                with self.c.lock(key, ttl="5s") as lease:
                    self.assertGreater(lease.fence, 0)
                    self.assertTrue(self.c.inspect(key)["held"])
                    t = threading.Thread(target=lambda: got.append(self.c.acquire(key, wait="5s")))
                    t.start()
                    eventually(lambda: self.waiters(key) == 1, 5, "queued")
                    if fail:
                        raise KeyError("boom")
            except KeyError:
                pass
            t.join(5)
            previous = dict(got[0].previous)
            self.assertRegex(previous.pop("ended_at"), r"^\d{4}-\d\d-\d\dT")
            self.assertEqual(previous, {"fence": lease.fence, "outcome": want})
            got[0].release()
        self.assertFalse(self.c.inspect(key)["held"])

    def test_renews_in_the_background(self):
        key = fresh_key("renew")
        with self.c.lock(key, ttl=1) as lease:
            first = lease.expires_at
            time.sleep(1.5)  # past the TTL: only renewals keep it
            self.assertFalse(lease.lost.is_set())
            self.assertGreater(lease.expires_at, first)
            self.assertTrue(self.c.inspect(key)["held"])

    def test_lost_lease_sets_lost(self):
        key = fresh_key("lost")
        started = time.monotonic()
        with self.assertRaises(mutexd.LeaseLost) as cm:
            with self.c.lock(key, ttl=1) as lease:
                self.c.force_release(key)  # DELETE /v1/locks/{key}
                self.assertTrue(lease.lost.wait(3), "lost was not set")
        self.assertLess(time.monotonic() - started, 2.0)  # at the next renewal, TTL/3 later
        self.assertIsInstance(cm.exception.__cause__, mutexd.NotHolder)
        self.assertIs(lease.error, cm.exception)

    def test_lost_before_the_deadline_when_the_server_is_gone(self):
        d = Daemon()
        c = mutexd.Client(d.url, max_attempts=1)
        self.addCleanup(c.close)
        sent = time.monotonic()
        lease = c.acquire("gone", ttl=2)
        lease.keep_alive()
        d.stop()
        self.assertTrue(lease.lost.wait(4))
        # The deadline counts from the acquire's sending, so the loss comes
        # the safety margin (0.2 s) before the server could expire it.
        self.assertLess(time.monotonic() - sent, 2.0)
        self.assertIn("no renewal succeeded", str(lease.error))

    def test_takeover_handle(self):
        key = fresh_key("handle")
        lease = self.c.acquire(key, ttl="5s")
        other = self.c.lease(key, lease.token)
        other.renew("7s")
        self.assertEqual(other.ttl, 7.0)
        other.release()
        self.assertFalse(self.c.inspect(key)["held"])

    def test_list_and_module_functions(self):
        prefix = fresh_key("list") + ":"
        env = {"MUTEXD_URL": daemon.url}
        old = {k: os.environ.get(k) for k in ("MUTEXD_URL", "MUTEXD_TOKEN")}
        os.environ.update(env)
        os.environ.pop("MUTEXD_TOKEN", None)
        try:
            with mutexd.lock(prefix + "a") as a:
                g = mutexd.acquire(prefix + "b", ttl="5s")
                self.assertEqual([l["key"] for l in mutexd.list(prefix)], [prefix + "a", prefix + "b"])
                mutexd.renew(g.key, g.token, "6s")
                mutexd.release(g.key, g.token)
                self.assertEqual(mutexd.inspect(a.key)["holder"]["fence"], a.fence)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class CancelTest(Base):
    def test_cancelled_wait_leaves_the_queue(self):
        key = fresh_key("cancel")
        holder = self.c.acquire(key)
        cancel, result = threading.Event(), []

        def wait():
            try:
                result.append(self.c.acquire(key, wait="30s", cancel=cancel))
            except Exception as e:  # checked below
                result.append(e)
        t = threading.Thread(target=wait)
        t.start()
        eventually(lambda: self.waiters(key) == 1, 5, "the waiter queued")
        started = time.monotonic()
        cancel.set()
        t.join(5)
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertIsInstance(result[0], mutexd.Cancelled)
        self.assertEqual(self.waiters(key), 0)  # gone at once: the server read EOF
        holder.release()

    def test_cancel_racing_a_grant_never_leaves_a_lease(self):
        key = fresh_key("race")
        granted = 0
        for _ in range(15):
            holder = self.c.acquire(key, ttl="10s")
            cancel, result = threading.Event(), []
            t = threading.Thread(target=lambda: result.append(self._try(key, cancel)))
            t.start()
            eventually(lambda: self.waiters(key) == 1, 5, "the waiter queued")
            r = threading.Thread(target=holder.release)
            r.start()
            cancel.set()
            r.join(5)
            t.join(5)
            if isinstance(result[0], mutexd.Lease):
                granted += 1
                result[0].release()
            else:
                self.assertIsInstance(result[0], mutexd.Cancelled)
            state = self.c.inspect(key)
            self.assertFalse(state["held"], f"a lease was left behind: {state}")
        print(f"\n  cancel race: {granted}/15 granted before the cancel was seen", end=" ")

    def _try(self, key, cancel):
        try:
            return self.c.acquire(key, wait="10s", cancel=cancel)
        except mutexd.MutexdError as e:
            return e


class DecoratorTest(Base):
    def test_key_from_arguments(self):
        seen = []

        @self.c.locked("job:{job_id}:{kind}", ttl="5s")
        def run(job_id, kind="daily"):
            seen.append(self.c.inspect(f"job:{job_id}:{kind}")["held"])
            return job_id * 2

        self.assertEqual(run(21), 42)
        self.assertEqual(run(job_id=1, kind="x"), 2)
        self.assertEqual(seen, [True, True])
        self.assertEqual(run.__name__, "run")

    def test_serializes_and_fails(self):
        key = fresh_key("deco")
        inside, peak = [0], []

        @self.c.locked(key, wait="10s")
        def work(fail=False):
            inside[0] += 1
            peak.append(inside[0])
            time.sleep(0.2 if fail else 0.02)
            inside[0] -= 1
            if fail:
                raise ValueError("no")

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(max(peak), 1)
        failed = []

        def fail():
            try:
                work(fail=True)
            except ValueError as e:
                failed.append(e)
        t = threading.Thread(target=fail)
        t.start()
        eventually(lambda: self.c.inspect(key)["held"], 5, "work holds the lock")
        lease = self.c.acquire(key, wait="5s")  # queued behind the failing call
        t.join(5)
        self.assertEqual(len(failed), 1)  # the function's own error reaches its caller
        self.assertEqual(lease.previous["outcome"], "failed")
        lease.release()


class ErrorsTest(Base):
    """Each error code the daemon answers with, from the real daemon."""

    def check(self, cls, code, status, fn, *args, **kwargs):
        with self.assertRaises(cls) as cm:
            fn(*args, **kwargs)
        e = cm.exception
        self.assertEqual((e.code, e.status), (code, status), str(e))
        self.assertTrue(e.message)
        return e

    def test_lock_errors(self):
        key = fresh_key("err")
        lease = self.c.acquire(key)
        e = self.check(mutexd.LockTimeout, "timeout", 423, self.c.acquire, key, wait=0)
        self.assertEqual(e.waiters, 0)
        self.assertTrue(e.request_id)
        self.assertIsInstance(e, TimeoutError)
        self.check(mutexd.NotHolder, "not_holder", 409, self.c.release, key, "0" * 32)
        self.check(mutexd.NotHolder, "not_holder", 409, self.c.renew, key, "0" * 32)
        self.check(mutexd.InvalidRequest, "invalid_outcome", 400, self.c.release, key, lease.token, "meh")
        self.check(mutexd.InvalidRequest, "missing_token", 400, self.c.release, key, "")
        lease.release()
        self.check(mutexd.NotHeld, "not_held", 404, self.c.force_release, key)

    def test_aborted(self):
        key = fresh_key("abort")
        holder = self.c.acquire(key, on_error="stop")
        result = []
        t = threading.Thread(target=lambda: result.append(self._acquire(key)))
        t.start()
        eventually(lambda: self.waiters(key) == 1, 5, "queued")
        holder.fail()
        t.join(5)
        self.assertIsInstance(result[0], mutexd.Aborted)
        self.assertEqual((result[0].code, result[0].status), ("aborted", 409))

    def _acquire(self, key):
        try:
            return self.c.acquire(key, wait="10s")
        except mutexd.MutexdError as e:
            return e

    def test_invalid_parameters(self):
        key = fresh_key("bad")
        self.check(mutexd.InvalidRequest, "invalid_key", 400, self.c.acquire, "k" * 257)
        self.check(mutexd.InvalidRequest, "invalid_ttl", 400, self.c.acquire, key, ttl="500ms")
        self.check(mutexd.InvalidRequest, "invalid_wait", 400, self.c.acquire, key, wait="11m")
        self.check(mutexd.InvalidRequest, "invalid_owner", 400, self.c.acquire, key, owner="o" * 129)
        self.check(mutexd.InvalidRequest, "invalid_on_error", 400, self.c.acquire, key, on_error="maybe")
        self.check(mutexd.InvalidRequest, "invalid_limit", 400, self.c.list_page, limit=5000)
        self.check(mutexd.NotFound, "not_found", 404, self.c._call, "GET", "/v1/nope")
        self.check(mutexd.NotFound, "method_not_allowed", 405, self.c._call, "PUT", "/v1/locks/x")

    def test_request_id_semantics(self):
        # Every acquire sends a request_id; the same one gets the same lease
        # while it lives, and LeaseEnded after.
        key = fresh_key("rid")
        a = self.c.acquire(key, request_id="job-1")
        b = self.c.acquire(key, request_id="job-1")
        self.assertEqual((b.token, b.fence), (a.token, a.fence))
        a.release()
        self.check(mutexd.LeaseEnded, "lease_ended", 409, self.c.acquire, key, request_id="job-1")
        self.check(mutexd.InvalidRequest, "invalid_request_id", 400, self.c.acquire, key, request_id="a b")
        # An immediate grant on an idle key learns how its last lease ended.
        c = self.c.acquire(key, wait=0)
        self.assertEqual(c.previous["fence"], a.fence)
        self.assertEqual(c.previous["outcome"], "released")
        c.release()

    def test_a_cancelled_wait_with_a_request_id_leaves_the_queue(self):
        key = fresh_key("leave")
        holder = self.c.acquire(key, ttl="1m")
        cancel = threading.Event()
        got = []
        t = threading.Thread(target=lambda: got.append(_raises(self.c.acquire, key, wait="1m", cancel=cancel)))
        t.start()
        eventually(lambda: self.c.inspect(key)["waiters"] == 1, what="the waiter queued")
        cancel.set()
        t.join(10)
        self.assertIsInstance(got[0], mutexd.Cancelled)
        eventually(lambda: self.c.inspect(key)["waiters"] == 0, 2.0, what="the waiter gone")
        holder.release()
        self.assertFalse(self.c.inspect(key)["held"])

    def test_unreachable_is_retried_then_raised(self):
        port = _free_port()
        c = mutexd.Client(f"http://ops:pw-topsecret@127.0.0.1:{port}", "tok-verysecret-123456",
                          max_attempts=3, min_backoff=0.01, max_backoff=0.02)
        with self.assertRaises(mutexd.Unreachable) as cm:
            c.acquire("k")
        e = cm.exception
        self.assertIsNone(e.status)
        self.assertIn("gave up after 3 tries", str(e))
        for secret in ("pw-topsecret", "tok-verysecret"):
            self.assertNotIn(secret, str(e))
            self.assertNotIn(secret, repr(e))
        self.assertIn("ops:xxxxx@", str(e))

    def _hanging_up_server(self):
        """A server that reads each request and hangs up without answering;
        returns its port and the requests it read."""
        ln = socket.socket()
        ln.bind(("127.0.0.1", 0))
        ln.listen(8)
        ln.settimeout(5)
        accepted = []

        def serve():
            try:
                while True:
                    conn, _ = ln.accept()
                    conn.settimeout(5)
                    req = conn.recv(65536)
                    head, _, body = req.partition(b"\r\n\r\n")
                    m = re.search(rb"(?i)content-length: *(\d+)", head)
                    while m and len(body) < int(m.group(1)):
                        more = conn.recv(65536)
                        if not more:
                            break
                        body += more
                    accepted.append(head + b"\r\n\r\n" + body)
                    conn.close()
            except OSError:
                pass
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        self.addCleanup(ln.close)
        return ln.getsockname()[1], accepted

    def test_an_acquire_that_reached_the_server_is_not_retried(self):
        # Without request ids (a server older than them), an acquire that
        # may have been granted is sent exactly once.
        port, accepted = self._hanging_up_server()
        c = mutexd.Client(f"http://127.0.0.1:{port}", min_backoff=0.01, max_backoff=0.02,
                          request_id_param=False)
        with self.assertRaises(mutexd.TransportError) as cm:
            c.acquire("k", ttl="5s")
        self.assertIsNone(cm.exception.status)
        time.sleep(0.1)
        self.assertEqual(len(accepted), 1)
        self.assertIn(b"POST /v1/locks/k/acquire", accepted[0])
        self.assertNotIn(b"request_id", accepted[0])

    def test_a_cut_acquire_is_retried_with_its_request_id(self):
        port, accepted = self._hanging_up_server()
        c = mutexd.Client(f"http://127.0.0.1:{port}", min_backoff=0.01, max_backoff=0.02, max_attempts=3)
        with self.assertRaises(mutexd.TransportError):
            c.acquire("k", ttl="5s")
        time.sleep(0.1)
        acquires = [a for a in accepted if b"/acquire" in a]
        # Three tries, then the withdrawal (wait 1ms), all with one id.
        self.assertGreaterEqual(len(acquires), 3, accepted)
        ids = {json.loads(a.split(b"\r\n\r\n", 1)[1])["request_id"] for a in acquires}
        self.assertEqual(len(ids), 1, ids)
        self.assertRegex(ids.pop(), "^[0-9a-f]{32}$")


def _raises(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the test looks at it
        return e
    return None


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ReadmeTest(unittest.TestCase):
    """The Python examples of the package's README and the repository's
    README run as they stand."""

    def run_first_python_block(self, readme, marker="```python\n"):
        text = read(readme)
        start = text.index(marker) + len(marker)
        code = text[start:text.index("```", start)]
        p = subprocess.run([PYTHON, "-c", code], env=python_env(daemon.url),
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return p.stdout.decode()

    def test_package_readme_example_runs(self):
        self.run_first_python_block(os.path.join(PACKAGE_ROOT, "README.md"))

    def test_repository_readme_example_runs(self):
        out = self.run_first_python_block(os.path.join(REPO_ROOT, "README.md"))
        self.assertIn("charging 42 under fence", out)
        self.assertIn("report for 2026-11-26", out)

if __name__ == "__main__":
    unittest.main()

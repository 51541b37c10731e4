"""Runs real mutexd daemons, built from this repository, for the tests."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)  # clients/python
REPO_ROOT = os.path.dirname(os.path.dirname(PACKAGE_ROOT))

_mu = threading.Lock()
_binary = None


def binary():
    """binary returns the path of a mutexd binary: $MUTEXD_BIN, else one
    built once per test run with go build."""
    global _binary
    with _mu:
        if _binary is None:
            path = os.environ.get("MUTEXD_BIN")
            if not path:
                tmp = tempfile.mkdtemp(prefix="mutexd-py-")
                atexit.register(shutil.rmtree, tmp, True)
                path = os.path.join(tmp, "mutexd")
                subprocess.run(["go", "build", "-o", path, "./cmd/mutexd"], cwd=REPO_ROOT, check=True)
            _binary = path
        return _binary


class Daemon:
    """Daemon is one mutexd process on 127.0.0.1:0; env holds extra
    MUTEXD_ settings ({"LIMITS_MAX_KEYS": "1"})."""

    def __init__(self, **env):
        full = dict(os.environ)
        for k in [k for k in full if k.startswith("MUTEXD_")]:
            del full[k]
        full["MUTEXD_LOG_FORMAT"] = "json"
        for k, v in env.items():
            full["MUTEXD_" + k] = str(v)
        self.proc = subprocess.Popen([binary(), "--listen", "127.0.0.1:0"], env=full,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.logs = []
        started = threading.Event()

        def drain():
            for line in self.proc.stderr:
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = {"msg": line.decode(errors="replace")}
                self.logs.append(rec)
                if rec.get("msg") == "mutexd started":
                    self.addr = rec["addr"]
                    started.set()
        self._reader = threading.Thread(target=drain, daemon=True)
        self._reader.start()
        if not started.wait(20):
            self.stop()
            raise RuntimeError(f"mutexd did not start: {self.logs}")
        self.url = "http://" + self.addr

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        self.proc.stderr.close()


def eventually(cond, timeout=5.0, what="condition"):
    """eventually polls cond until it is true, failing after timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def python_env(url, token=None):
    """python_env is the environment of a Python subprocess that imports this
    package and talks to url."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTEXD_")}
    env["PYTHONPATH"] = PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["MUTEXD_URL"] = url
    if token:
        env["MUTEXD_TOKEN"] = token
    return env


PYTHON = sys.executable

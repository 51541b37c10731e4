"""A separate process that locks a key: python worker.py KEY NAME OUTFILE.

It waits for the key (owner NAME), appends "granted NAME FENCE" to OUTFILE
while holding it, and exits 0; an Aborted wait appends "aborted NAME" and
exits 3."""

import sys
import time

import mutexd

key, name, out = sys.argv[1:4]
try:
    with mutexd.lock(key, ttl="10s", wait="20s", owner=name) as lease:
        with open(out, "a") as f:
            f.write(f"granted {name} {lease.fence}\n")
        time.sleep(0.05)
except mutexd.Aborted:
    with open(out, "a") as f:
        f.write(f"aborted {name}\n")
    sys.exit(3)

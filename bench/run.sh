#!/usr/bin/env bash
# One command for the peer comparison: installs Debian's redis-server and
# etcd-server if they are missing, then runs bench/cmd/compare, which starts
# mutexd, the two ceiling servers, Redis and etcd on loopback, drives them
# all through the same load generator and rewrites BENCHMARKS.md and
# docs/benchmarks.png. Flags go to compare (-reps, -duration, -systems,
# -waiters, -json, -base). -base REV (a git revision: main~5, a commit hash)
# also builds mutexd at REV and runs it as the system "base" in the same
# rotation, adding a section "Against the previous build" to the report.
# Not run in CI: it takes about ten minutes. For the comparison alone,
# without Redis or etcd and without touching BENCHMARKS.md, run
# `make bench-base` (or -systems mutexd,base -base REV, which prints it to
# stdout unless -out names a file). -systems cluster runs only the
# comparison of a three-server mutexd cluster with a three-member etcd
# cluster (`make bench-cluster`), which needs no Redis.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

need_redis=1
for arg in "$@"; do
  case "$arg" in cluster | -systems=cluster | --systems=cluster) need_redis=0 ;; esac
done
missing=()
[ "$need_redis" -eq 0 ] || command -v redis-server >/dev/null || missing+=(redis-server)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cd "$root/bench"
# compare writes the repository's BENCHMARKS.md (and docs/benchmarks.png
# beside it) unless -out says otherwise, or only -systems mutexd,base ran.
exec go run ./cmd/compare "$@"

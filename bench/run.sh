#!/usr/bin/env bash
# One command for the peer comparison: installs Debian's redis-server and
# etcd-server if they are missing, then runs bench/cmd/compare, which starts
# mutexd, the two ceiling servers, Redis and etcd on loopback, drives them
# all through the same load generator and rewrites BENCHMARKS.md and
# docs/benchmarks.png. Flags go to compare (-reps, -duration, -systems,
# -waiters, -json). Not run in CI: it takes about ten minutes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cd "$root/bench"
exec go run ./cmd/compare -out "$root/BENCHMARKS.md" -chart docs/benchmarks.png "$@"

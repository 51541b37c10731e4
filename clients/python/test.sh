#!/usr/bin/env bash
# Tests of the Python client (clients/python) against real mutexd daemons
# built from this repository. CI runs it from .ci/run; MUTEXD_BIN=path skips
# the build. Exits non-zero when a test fails.
set -euo pipefail
cd "$(dirname "$0")"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || {
  echo "clients/python: needs Python 3.9 or newer, found $(python3 --version 2>&1)" >&2; exit 1; }
if [ -z "${MUTEXD_BIN:-}" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd ../.. && go build -o "$tmp/mutexd" ./cmd/mutexd)
  export MUTEXD_BIN="$tmp/mutexd"
fi
export PYTHONDONTWRITEBYTECODE=1
python3 -m unittest discover "$@"

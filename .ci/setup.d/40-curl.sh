#!/usr/bin/env bash
# curl for the test that runs the README's walk-through as printed.
set -euo pipefail
command -v curl >/dev/null && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null

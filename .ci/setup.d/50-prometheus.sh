#!/usr/bin/env bash
# Prometheus and promtool for the deploy tests (deploy/*_test.go): promtool
# checks the config, the rules and their unit tests, and a real Prometheus
# scrapes a real mutexd to prove every dashboard panel shows data. `file`
# checks the container build produces a static binary.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v file >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus file >/dev/null
# The package enables a system service; the tests start their own instance.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
prometheus --version 2>&1 | head -1

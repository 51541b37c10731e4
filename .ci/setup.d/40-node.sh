#!/usr/bin/env bash
# Node.js (>= 18) and npm for the JavaScript client's tests (clients/js).
# Debian's packages when missing; idempotent and quiet.
set -euo pipefail
if command -v node >/dev/null && command -v npm >/dev/null \
  && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends nodejs npm >/dev/null
node --version

#!/usr/bin/env bash
# CI entry point for the JavaScript client: install the pinned dev
# dependencies from the lockfile, build, type-check, and run the tests
# against a mutexd built from this repository (test/run.mjs builds it).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --ignore-scripts   # npm test builds
npm test

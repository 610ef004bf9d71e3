#!/usr/bin/env bash
# The whole test suite: unit tests, then integration tests on the real Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOTILLA_BASE_IMAGE="$(bash scripts/prepare.sh)"
export FLOTILLA_BASE_IMAGE
npx vitest run "$@"

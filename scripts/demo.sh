#!/usr/bin/env bash
# Starts Flotilla and serves the example app on http://127.0.0.1:8000 until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOTILLA_BASE_IMAGE="$(bash scripts/prepare.sh)"
export FLOTILLA_BASE_IMAGE
exec node dist/examples/hello.js

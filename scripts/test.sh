#!/usr/bin/env bash
# The whole test suite: unit tests, then integration tests on the real Docker engine.
# Ends with one summary line, "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
FLOTILLA_BASE_IMAGE="$(bash scripts/prepare.sh)"
export FLOTILLA_BASE_IMAGE
results=$(mktemp)
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$results" "$@" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);
' "$results" || true
rm -f "$results"
exit "$status"

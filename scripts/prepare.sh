#!/usr/bin/env bash
# Readies a fresh machine for Flotilla: npm packages, a compiled build, a Docker
# engine and a Node base image for replicas. Prints the base image to use:
# $FLOTILLA_BASE_IMAGE if set, else node:20-bookworm-slim when the engine has or
# can pull it, else flotilla-local/node:20-bookworm-slim, built offline.
# Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund >&2
fi
npm run --silent build >&2
bash scripts/engine.sh

base="${FLOTILLA_BASE_IMAGE:-}"
if [ -z "$base" ]; then
  if docker image inspect node:20-bookworm-slim >/dev/null 2>&1 \
    || timeout 120 docker pull -q node:20-bookworm-slim >/dev/null 2>&1; then
    base=node:20-bookworm-slim
  else
    echo "prepare: node:20-bookworm-slim cannot be pulled; using the offline base image" >&2
    base=flotilla-local/node:20-bookworm-slim
  fi
fi
if [ "$base" = flotilla-local/node:20-bookworm-slim ]; then
  bash scripts/base-image.sh
fi
echo "$base"

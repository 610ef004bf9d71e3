#!/usr/bin/env bash
# Builds the image of Flotilla's control plane (images/flotilla/Dockerfile) as
# flotilla:latest from this checkout's compiled dist/. The base image is
# $FLOTILLA_BASE_IMAGE, else node:20-bookworm-slim when the engine has or can
# pull it, else the offline flotilla-local/node:20-bookworm-slim; a CA bundle for npm
# behind a TLS-intercepting proxy comes from $FLOTILLA_BUILD_CA_FILE or
# $NODE_EXTRA_CA_CERTS.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-flotilla:latest}"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/dist"
cp package.json package-lock.json "$context/"
cp -r dist/src "$context/dist/src"
cp -r images "$context/images"
cp -r dashboard "$context/dashboard"
ca="${FLOTILLA_BUILD_CA_FILE:-${NODE_EXTRA_CA_CERTS:-}}"
if [ -n "$ca" ] && [ -f "$ca" ]; then cp "$ca" "$context/build-ca.pem"; fi
base="${FLOTILLA_BASE_IMAGE:-}"
if [ -z "$base" ]; then
  base=node:20-bookworm-slim
  if ! docker image inspect "$base" >/dev/null 2>&1 && ! timeout 20 docker pull -q "$base" >/dev/null 2>&1 \
    && docker image inspect flotilla-local/node:20-bookworm-slim >/dev/null 2>&1; then
    base=flotilla-local/node:20-bookworm-slim
  fi
fi
docker build -q -t "$tag" -f images/flotilla/Dockerfile --build-arg BASE_IMAGE="$base" "$context" >/dev/null
echo "$tag"

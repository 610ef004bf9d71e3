#!/usr/bin/env bash
# Builds the image of Flotilla's control plane (images/flotilla/Dockerfile) as
# flotilla:latest from this checkout's compiled dist/. The base image is
# $FLOTILLA_BASE_IMAGE (default node:20-bookworm-slim); a CA bundle for npm
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
ca="${FLOTILLA_BUILD_CA_FILE:-${NODE_EXTRA_CA_CERTS:-}}"
if [ -n "$ca" ] && [ -f "$ca" ]; then cp "$ca" "$context/build-ca.pem"; fi
docker build -q -t "$tag" -f images/flotilla/Dockerfile \
  --build-arg BASE_IMAGE="${FLOTILLA_BASE_IMAGE:-node:20-bookworm-slim}" "$context" >/dev/null
echo "$tag"

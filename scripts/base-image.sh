#!/usr/bin/env bash
# Builds the offline base images without a registry (each step skipped when done):
#   flotilla-local/bookworm-minbase:latest  debootstrap minbase bookworm, imported
#                                           (the offline FLOTILLA_PYTHON_BASE_IMAGE)
#   flotilla-local/node:20-bookworm-slim    that plus the host's Node.js and npm
#                                           (the offline FLOTILLA_BASE_IMAGE)
#   flotilla-local/trixie-minbase:latest    debootstrap minbase trixie, imported
#                                           (a second Debian for side-by-side tests)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
rootfs_image=flotilla-local/bookworm-minbase:latest
node_image=flotilla-local/node:20-bookworm-slim

bash "$here/scripts/rootfs-image.sh" bookworm "$rootfs_image"

if ! docker image inspect "$node_image" >/dev/null 2>&1; then
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  node_bin=$(readlink -f "$(command -v node)")
  npm_dir=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)
  cp "$node_bin" "$context/node"
  cp -r "$npm_dir" "$context/npm"
  cp "$here/images/node-base/Dockerfile" "$context/Dockerfile"
  echo "base-image: building $node_image with node $("$node_bin" --version)" >&2
  docker build -q -t "$node_image" --build-arg ROOTFS="$rootfs_image" "$context" >/dev/null
fi

bash "$here/scripts/rootfs-image.sh" trixie flotilla-local/trixie-minbase:latest

#!/usr/bin/env bash
# Builds flotilla-local/node:20-bookworm-slim without a registry: debootstrap a
# minimal bookworm, import it, and add the host's Node.js and npm.
# Set FLOTILLA_BASE_IMAGE=flotilla-local/node:20-bookworm-slim to use it.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
rootfs_image=flotilla-local/bookworm-minbase:latest
node_image=flotilla-local/node:20-bookworm-slim

if docker image inspect "$node_image" >/dev/null 2>&1; then
  exit 0
fi

debian_mirror() {
  if [ -n "${FLOTILLA_DEBIAN_MIRROR:-}" ]; then
    echo "$FLOTILLA_DEBIAN_MIRROR"
    return
  fi
  cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | awk '/^(URIs:|deb) / && $2 !~ /security/ {print $2; exit}' || true
}

if ! docker image inspect "$rootfs_image" >/dev/null 2>&1; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "base-image: installing debootstrap" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  fi
  mirror=$(debian_mirror)
  if [ -z "$mirror" ]; then
    echo "base-image: no Debian mirror found in apt sources; set FLOTILLA_DEBIAN_MIRROR" >&2
    exit 1
  fi
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "base-image: debootstrap bookworm from $mirror" >&2
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$rootfs_image" >/dev/null
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
node_bin=$(readlink -f "$(command -v node)")
npm_dir=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)
cp "$node_bin" "$context/node"
cp -r "$npm_dir" "$context/npm"
cp "$here/images/node-base/Dockerfile" "$context/Dockerfile"
echo "base-image: building $node_image with node $("$node_bin" --version)" >&2
docker build -q -t "$node_image" --build-arg ROOTFS="$rootfs_image" "$context" >/dev/null

#!/usr/bin/env bash
# Usage: rootfs-image.sh SUITE IMAGE
# Imports a minimal Debian SUITE (debootstrap --variant=minbase) as IMAGE unless the
# engine already has it. No registry is needed: packages come from the Debian mirror.
set -euo pipefail

suite=$1
image=$2

if docker image inspect "$image" >/dev/null 2>&1; then
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

if ! command -v debootstrap >/dev/null 2>&1 || [ ! -e "/usr/share/debootstrap/scripts/$suite" ]; then
  echo "rootfs-image: installing debootstrap" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap debian-archive-keyring >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap debian-archive-keyring >/dev/null; }
fi
mirror=$(debian_mirror)
if [ -z "$mirror" ]; then
  echo "rootfs-image: no Debian mirror found in apt sources; set FLOTILLA_DEBIAN_MIRROR" >&2
  exit 1
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "rootfs-image: debootstrap $suite from $mirror as $image" >&2
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import - "$image" >/dev/null

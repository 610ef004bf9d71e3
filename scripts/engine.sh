#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine: installs Debian's docker.io
# when dockerd is missing (root only) and starts dockerd in the background.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "engine: no Docker engine answers and dockerd is not installed; install Docker or run as root" >&2
    exit 1
  fi
  echo "engine: installing docker.io" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if [ "$(id -u)" != 0 ]; then
  echo "engine: dockerd is installed but not running; start it (e.g. systemctl start docker)" >&2
  exit 1
fi

log=/var/log/flotilla-dockerd.log
echo "engine: starting dockerd (log: $log)" >&2
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "engine: dockerd did not answer within 60 s; see $log" >&2
tail -n 20 "$log" >&2
exit 1

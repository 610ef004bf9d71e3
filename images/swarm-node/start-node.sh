#!/bin/sh
# Starts a nested dockerd. The node container is not --privileged (this machine's
# bounding set lacks CAP_SYS_RESOURCE, which --privileged insists on), so the cgroup
# and /sys mounts it gets read-only are remounted writable first.
set -e
mount -o remount,rw /sys
for controller in /sys/fs/cgroup/*; do mount -o remount,rw,bind "$controller" 2>/dev/null || true; done
exec dockerd --host unix:///var/run/docker.sock --host unix:///run/bed/docker.sock "$@"

#!/usr/bin/env bash
# Usage: swarm-testbed.sh up|down|env [NAME]
# A real multi-node Docker Swarm on this one machine: a manager and two workers, each
# a Docker-in-Docker container (images/swarm-node: the offline base plus Debian's
# docker.io), a registry from Debian's docker-registry, all on one bridge network NAME.
# The manager's engine answers on the host at /tmp/NAME/manager/docker.sock; the
# workers advertise GPUs as generic resources (worker1: gpu=w1-gpu0, worker2:
# gpu=w2-gpu0,w2-gpu1). The node image is cached by the hash of its build files.
# `up` prints the bed's settings as shell assignments (as `env` does).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
command=${1:?usage: swarm-testbed.sh up|down|env [NAME]}
name=${2:-flotilla-bed}
dir=/tmp/$name
rootfs=flotilla-local/bookworm-minbase:latest
nodes=(manager worker1 worker2)

node_image() {
  local hash
  hash=$(cat "$here"/images/swarm-node/* | sha256sum | cut -c1-12)
  echo "flotilla-local/swarm-node:$hash"
}

settings() {
  local ip
  ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$name\").IPAddress}}" "$name-manager")
  echo "FLOTILLA_BED_SOCKET=$dir/manager/docker.sock"
  echo "FLOTILLA_BED_MANAGER=$ip"
  echo "FLOTILLA_BED_REGISTRY=registry:5000"
}

in_node() { docker exec "$name-$1" docker "${@:2}"; }

down() {
  docker rm -f -v "${nodes[@]/#/$name-}" "$name-registry" >/dev/null 2>&1 || true
  docker network rm "$name" >/dev/null 2>&1 || true
  rm -rf "$dir"
}

wait_engine() {
  for _ in $(seq 1 60); do
    in_node "$1" info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "swarm-testbed: the engine of $1 did not start:" >&2
  docker logs --tail 20 "$name-$1" >&2
  return 1
}

up() {
  local image
  image=$(node_image)
  bash "$here/scripts/rootfs-image.sh" bookworm "$rootfs"
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "swarm-testbed: building $image" >&2
    docker build -q -t "$image" --build-arg ROOTFS="$rootfs" "$here/images/swarm-node" >/dev/null
  fi
  down
  docker network create "$name" >/dev/null
  docker run -d --name "$name-registry" --network "$name" --network-alias registry \
    "$image" docker-registry serve /opt/bed/registry.yml >/dev/null
  local -A gpus=([manager]="" [worker1]="--node-generic-resource gpu=w1-gpu0"
    [worker2]="--node-generic-resource gpu=w2-gpu0 --node-generic-resource gpu=w2-gpu1")
  for node in "${nodes[@]}"; do
    mkdir -p "$dir/$node"
    # shellcheck disable=SC2086 # the generic resources are separate flags
    docker run -d --name "$name-$node" --hostname "$node" --network "$name" \
      --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined \
      --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
      -v /var/lib/docker -v "$dir/$node:/run/bed" --label "flotilla.testbed=$name" \
      "$image" /opt/bed/start-node.sh --storage-driver=overlay2 --insecure-registry=registry:5000 \
      --default-address-pool base=10.199.0.0/16,size=24 ${gpus[$node]} >/dev/null
  done
  for node in "${nodes[@]}"; do wait_engine "$node"; done
  local ip token
  ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$name\").IPAddress}}" "$name-manager")
  in_node manager swarm init --advertise-addr "$ip" >/dev/null
  token=$(in_node manager swarm join-token -q worker)
  for node in worker1 worker2; do in_node "$node" swarm join --token "$token" "$ip:2377" >/dev/null; done
  # The manager builds images: it gets the base images the host has.
  for base in "$rootfs" flotilla-local/node:20-bookworm-slim node:20-bookworm-slim; do
    if docker image inspect "$base" >/dev/null 2>&1; then docker save "$base" | docker exec -i "$name-manager" docker load >/dev/null; fi
  done
  chmod 755 "$dir" "$dir/manager"
  settings
}

case "$command" in
  up) up ;;
  down) down ;;
  env) settings ;;
  *) echo "usage: swarm-testbed.sh up|down|env [NAME]" >&2; exit 2 ;;
esac

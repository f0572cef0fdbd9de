# Sourced by the demo and benchmark scripts. start_registry DIR starts Debian's
# docker-registry on a free loopback port and sets REGISTRY=127.0.0.1:PORT;
# start_containerd DIR starts a private containerd (its own root, state and
# socket under DIR, the freshly built shim on its PATH) and sets CTR to the
# ctr command for it; start_docker DIR BINDIR starts a private Docker Engine
# (scripts/docker-engine.sh) with its own containerd, in a network namespace of
# its own, and sets DOCKER to the docker command for it. Everything started is
# stopped when the script exits; the machine's own Docker is never touched.
SERVICE_PIDS=""
SERVICE_NETNS=""
stop_services() {
  # Never fails: under `set -e` a failing `wait` (a service killed by
  # SIGTERM reports 143) would make the script's own status 143.
  kill $SERVICE_PIDS 2>/dev/null || true
  wait $SERVICE_PIDS 2>/dev/null || true
  [ -z "$SERVICE_NETNS" ] || ip netns del "$SERVICE_NETNS"
  # The private dockerd's cgroup parent (empty once its containers are gone).
  [ -z "$SERVICE_NETNS" ] || rmdir /sys/fs/cgroup/"$SERVICE_NETNS" /sys/fs/cgroup/*/"$SERVICE_NETNS" 2>/dev/null || true
}
trap stop_services EXIT

# wait_until LOG COMMAND...: runs COMMAND every 0.1 s until it succeeds (at
# most 30 s); on time-out says which service did not start and where its log is.
wait_until() {
  local log=$1
  shift
  for _ in $(seq 300); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "error: $1 did not become ready; see $log" >&2
  return 1
}

start_registry() {
  local dir=$1 port
  mkdir -p "$dir/data"
  for port in $(seq 5000 5999); do
    if ! (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  done
  cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
YAML
  docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
  SERVICE_PIDS="$SERVICE_PIDS $!"
  REGISTRY=127.0.0.1:$port
  wait_until "$dir/registry.log" curl -fsS "http://$REGISTRY/v2/"
}

# build_bins PROFILE builds the workspace's binaries (release or debug) and
# sets BINDIR to where they are.
build_bins() {
  if [ "$1" = release ]; then
    cargo build --quiet --release --workspace --bins
  else
    cargo build --quiet --workspace --bins
  fi
  BINDIR=$PWD/target/$1
}

start_containerd() {
  local dir=$1 bindir=$2
  mkdir -p "$dir"
  cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = "$dir/containerd.sock.debug"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
TOML
  # Its shims keep compiled modules and policy verdicts under DIR, not in
  # the machine's cache; CONTAINERD_ENV adds NAME=VALUE words (WASMBOX_POLICY),
  # CONTAINERD_EXTRA_PATH a directory of other shims (benches/suite.sh's peers).
  # shellcheck disable=SC2086
  PATH="$bindir:${CONTAINERD_EXTRA_PATH:+$CONTAINERD_EXTRA_PATH:}$PATH" WASMBOX_CACHE_DIR="$dir/module-cache" WASMBOX_VERIFIED_DIR="$dir/verified" \
    env ${CONTAINERD_ENV:-} containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
  SERVICE_PIDS="$SERVICE_PIDS $!"
  CTR="ctr -a $dir/containerd.sock"
  wait_until "$dir/containerd.log" $CTR version
}

start_docker() {
  local dir=$1 bindir=$2 engine netns
  engine=$(scripts/docker-engine.sh) || return 1
  mkdir -p "$dir/client/cli-plugins"
  ln -sf "$engine"/cli-plugins/* "$dir/client/cli-plugins/"
  netns=wasmbox-$$
  ip netns add "$netns" && SERVICE_NETNS=$netns
  ip -n "$netns" link set lo up
  cat >"$dir/containerd.toml" <<TOML
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
TOML
  local in_netns="nsenter --net=/run/netns/$netns env PATH=$bindir:$engine/bin:$PATH"
  $in_netns "$engine/bin/containerd" --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
  SERVICE_PIDS="$! $SERVICE_PIDS"
  wait_until "$dir/containerd.log" "$engine/bin/ctr" -a "$dir/containerd.sock" version || return 1
  $in_netns "$engine/bin/dockerd" --config-file deploy/docker/daemon.json \
    --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
    --host "unix://$dir/docker.sock" --containerd "$dir/containerd.sock" \
    --cgroup-parent "/$netns" >"$dir/dockerd.log" 2>&1 &
  # dockerd first in the list: it stops before its containerd.
  SERVICE_PIDS="$! $SERVICE_PIDS"
  DOCKER="env DOCKER_HOST=unix://$dir/docker.sock DOCKER_CONFIG=$dir/client $engine/bin/docker"
  wait_until "$dir/dockerd.log" $DOCKER version
}

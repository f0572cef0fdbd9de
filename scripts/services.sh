# Sourced by the demo and benchmark scripts. start_registry DIR starts Debian's
# docker-registry on a free loopback port and sets REGISTRY=127.0.0.1:PORT;
# start_containerd DIR starts a private containerd (its own root, state and
# socket under DIR, the freshly built shim on its PATH) and sets CTR to the
# ctr command for it. Everything started is stopped when the script exits.
SERVICE_PIDS=""
trap 'kill $SERVICE_PIDS 2>/dev/null; wait $SERVICE_PIDS 2>/dev/null || true' EXIT

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
  for _ in $(seq 100); do
    curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "error: docker-registry did not start; see $dir/registry.log" >&2
  return 1
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
  PATH="$bindir:$PATH" containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
  SERVICE_PIDS="$SERVICE_PIDS $!"
  CTR="ctr -a $dir/containerd.sock"
  for _ in $(seq 100); do
    $CTR version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "error: containerd did not start; see $dir/containerd.log" >&2
  return 1
}

# Sourced by the demo and benchmark scripts: start_registry DIR starts Debian's
# docker-registry on a free loopback port, sets REGISTRY=127.0.0.1:PORT, and
# stops every registry it started when the calling script exits.
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
  REGISTRY_PIDS="${REGISTRY_PIDS:-} $!"
  trap 'kill $REGISTRY_PIDS 2>/dev/null; wait $REGISTRY_PIDS 2>/dev/null || true' EXIT
  REGISTRY=127.0.0.1:$port
  for _ in $(seq 100); do
    curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "error: docker-registry did not start; see $dir/registry.log" >&2
  return 1
}

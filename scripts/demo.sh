#!/usr/bin/env bash
# The main job end to end: build, start a local registry, pack examples/hello,
# push it, pull it back into a fresh store and show what it is, then pull it
# sign it, pull it into a private containerd that enforces a signature
# policy and run it there with the wasmtime shim (and see an unsigned image
# refused), and last through a private Docker Engine with `docker run`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
work=$PWD/.demo
rm -rf "$work" && mkdir -p "$work"

echo "== building wasmbox and containerd-shim-wasmtime-v1"
cargo build --quiet --workspace --bins
wasmbox=$PWD/target/debug/wasmbox

echo "== compiling examples/hello/hello.c to WASI with clang"
clang --target=wasm32-wasi -O2 -o "$work/hello.wasm" examples/hello/hello.c

echo "== starting a local registry"
start_registry "$work/registry"
image=$REGISTRY/examples/hello:latest
echo "registry at $REGISTRY"

echo "== wasmbox pack $image --push"
WASMBOX_STORE=$work/store "$wasmbox" pack "$work/hello.wasm" -t "$image" \
  --env GREETING=hello --arg world --label org.opencontainers.image.source=examples/hello \
  --push --plain-http -o "$work/hello.tar"

echo "== wasmbox pull $image (into a fresh store)"
WASMBOX_STORE=$work/pulled "$wasmbox" pull "$image" --plain-http

echo "== wasmbox inspect $image"
WASMBOX_STORE=$work/pulled "$wasmbox" inspect "$image"

echo "== skopeo (an independent client) sees the same manifest"
skopeo inspect --tls-verify=false "docker://$image" | grep -E '"(Digest|Architecture|Os)"'

echo "== wasmbox generate-key + wasmbox sign $image (cosign's formats) + wasmbox verify"
(cd "$work" && WASMBOX_PASSWORD=demo "$wasmbox" generate-key)
WASMBOX_PASSWORD=demo "$wasmbox" sign "$image" --key "$work/cosign.key" --plain-http
"$wasmbox" verify "$image" --key "$work/cosign.pub" --plain-http
cat >"$work/policy.json" <<JSON
{"default": [{"type": "sigstoreSigned", "keyPath": "$work/cosign.pub", "signedIdentity": {"type": "matchRepository"}}]}
JSON

echo "== containerd with WASMBOX_POLICY (only images signed by that key run): ctr image pull + ctr run --runtime io.containerd.wasmtime.v1"
CONTAINERD_ENV="WASMBOX_POLICY=$work/policy.json" start_containerd "$work/containerd" "$PWD/target/debug"
$CTR image pull --plain-http "$image" >/dev/null
$CTR run --rm --runtime io.containerd.wasmtime.v1 "$image" demo-hello
$CTR run --rm --runtime io.containerd.wasmtime.v1 --env GREETING=Bonjour "$image" demo-args /hello.wasm containerd
unsigned=$REGISTRY/examples/unsigned:latest
WASMBOX_STORE=$work/store "$wasmbox" pack "$work/hello.wasm" -t "$unsigned" --push --plain-http >/dev/null
$CTR image pull --plain-http "$unsigned" >/dev/null
echo "-- an unsigned image is refused at create:"
if $CTR run --rm --runtime io.containerd.wasmtime.v1 "$unsigned" demo-unsigned; then
  echo "error: the unsigned image ran" >&2
  exit 1
fi
$CTR containers rm demo-unsigned >/dev/null 2>&1 || true

echo "== a private Docker Engine: docker load + docker run --runtime io.containerd.wasmtime.v1 --platform wasi/wasm"
if ! scripts/docker-engine.sh >/dev/null; then
  echo "(skipped: Docker Engine could not be fetched from Debian's archive)"
  exit 0
fi
start_docker "$work/docker" "$PWD/target/debug"
$DOCKER version --format 'Docker Engine {{.Server.Version}}'
$DOCKER load -i "$work/hello.tar"
$DOCKER run --rm --runtime io.containerd.wasmtime.v1 --platform wasi/wasm "$image"
$DOCKER run --rm --runtime io.containerd.wasmtime.v1 --platform wasi/wasm -e GREETING=Hallo "$image" docker

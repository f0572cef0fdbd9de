#!/usr/bin/env bash
# Measurement (not a test): how often `ctr run --rm` exits 0 but prints
# nothing, for the same hello world on our shim and on runc, 4 runs at a time
# (the load of the shim test's 1000-cycle drill). On this project's machines
# both lose about one run in a thousand: the race is in ctr's copying of the
# output, which abandons a FIFO open still pending when the task is deleted,
# not in either shim. RUNS (default 250) per worker; PROFILE (default release).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
runs=${RUNS:-250}
profile=${PROFILE:-release}
work=$PWD/.bench-output-race
rm -rf "$work" && mkdir -p "$work/wasm" "$work/native"

build_bins "$profile"
start_containerd "$work/containerd" "$BINDIR"
# Root filesystems given to ctr as they are (--rootfs): no image needed.
clang --target=wasm32-wasi -O2 -o "$work/wasm/hello.wasm" examples/hello/hello.c
gcc -static -O2 -o "$work/native/hello" examples/hello/hello.c
expected=$("$work/native/hello")

worker() {
  local runtime=$1 rootfs=$2 program=$3 w=$4 lost=0 failed=0 out
  for i in $(seq "$runs"); do
    if ! out=$($CTR run --rm --runtime "$runtime" --rootfs "$rootfs" "$w-$i" "$program" </dev/null 2>&1); then
      failed=$((failed + 1))
    elif [ "$out" != "$expected" ]; then
      lost=$((lost + 1))
    fi
  done
  echo "$lost $failed"
}
drill() {
  local name=$1 id=$2 runtime=$3 rootfs=$4 program=$5 pids=() lost=0 failed=0
  for w in 1 2 3 4; do
    worker "$runtime" "$rootfs" "$program" "$id$w" >"$work/$id$w.out" &
    pids+=($!)
  done
  wait "${pids[@]}"
  for w in 1 2 3 4; do
    read -r l f <"$work/$id$w.out"
    lost=$((lost + l)) failed=$((failed + f))
  done
  printf '%-32s: %d of %d exited 0 without output, %d failed\n' "$name" "$lost" $((runs * 4)) "$failed"
}
drill "wasm on containerd-shim-wasmtime" wasm io.containerd.wasmtime.v1 "$work/wasm" /hello.wasm
drill "native on runc" native io.containerd.runc.v2 "$work/native" /hello

#!/usr/bin/env bash
# Benchmark (not a test): wall time of `ctr run --rm` for the same hello world
# as a Wasm image on our shim and as a static native binary on runc, on one
# private containerd, interleaved; prints min/median/p90 and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
source benches/lib.sh # native_image
runs=${RUNS:-30}
work=$PWD/.bench-startup
rm -rf "$work" && mkdir -p "$work"

cargo build --quiet --release --workspace --bins
start_containerd "$work/containerd" "$PWD/target/release"

# Wasm image, packed by wasmbox.
clang --target=wasm32-wasi -O2 -o "$work/hello.wasm" examples/hello/hello.c
WASMBOX_STORE=$work/store target/release/wasmbox pack "$work/hello.wasm" -t bench.test/hello-wasm:v1 -o "$work/wasm.tar" >/dev/null
$CTR image import "$work/wasm.tar" >/dev/null

# The same program as a static Linux binary in a FROM-scratch style image.
mkdir -p "$work/native"
gcc -static -O2 -o "$work/native/hello" examples/hello/hello.c
native_image "$work/native/hello" hello-native

run_wasm() { $CTR run --rm --runtime io.containerd.wasmtime.v1 bench.test/hello-wasm:v1 "w$1" >/dev/null; }
run_native() { $CTR run --rm --runtime io.containerd.runc.v2 bench.test/hello-native:v1 "n$1" >/dev/null; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
for i in 1 2; do run_wasm "warm$i"; run_native "warm$i"; done
declare -a t_wasm t_native
for i in $(seq "$runs"); do
  s=$(date +%s%N); run_wasm "$i"; t_wasm+=("$(ms "$s")")
  s=$(date +%s%N); run_native "$i"; t_native+=("$(ms "$s")")
done
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %d ms  median %d ms  p90 %d ms", a[1], a[int((NR+1)/2)], a[int(NR*0.9+0.5)]}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "ctr run --rm, $runs runs each, interleaved"
echo "wasm on containerd-shim-wasmtime-v1 : $(stats "${t_wasm[@]}")"
echo "native static binary on runc        : $(stats "${t_native[@]}")"
echo "ratio wasm/runc (median)            : $(echo "scale=2; $(median "${t_wasm[@]}") / $(median "${t_native[@]}")" | bc)  (goal < 1)"

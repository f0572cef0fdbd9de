#!/usr/bin/env bash
# Benchmark (not a test): what N idle containers cost, ours vs runc. Starts
# N sleepers (a C program in nanosleep) as Wasm on our shim and as a static
# native binary on runc, on one private containerd, then sums the CPU time
# their shim (and runc's container) processes use over a window and their
# PSS. N (default 50), WINDOW seconds (default 10), PROFILE (default release).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
source benches/lib.sh # pids_of, ticks, pss_kib
n=${N:-50}
window=${WINDOW:-10}
profile=${PROFILE:-release}
work=$PWD/.bench-idle
rm -rf "$work" && mkdir -p "$work/wasm" "$work/native"

build_bins "$profile"
start_containerd "$work/containerd" "$BINDIR"
cat >"$work/sleeper.c" <<'C'
#include <unistd.h>
int main(void) { sleep(100000); return 0; }
C
clang --target=wasm32-wasi -O2 -o "$work/wasm/sleeper.wasm" "$work/sleeper.c"
gcc -static -O2 -o "$work/native/sleeper" "$work/sleeper.c"

measure() {
  local name=$1 prefix=$2 runtime=$3 rootfs=$4 program=$5 pids before after hz
  for i in $(seq "$n"); do
    $CTR run -d --runtime "$runtime" --rootfs "$rootfs" "$prefix$i" "$program" >/dev/null
  done
  sleep 2
  mapfile -t pids < <(pids_of "$prefix")
  hz=$(getconf CLK_TCK)
  before=$(ticks "${pids[@]}")
  sleep "$window"
  after=$(ticks "${pids[@]}")
  # ms of CPU per second per container = ticks * 1000 / hz / window / n
  printf '%-22s: %s ms CPU per second per container, %s MB PSS per container (N=%d, %d processes)\n' \
    "$name" \
    "$(echo "scale=3; ($after - $before) * 1000 / $hz / $window / $n" | bc)" \
    "$(echo "scale=2; $(pss_kib "${pids[@]}") / 1024 / $n" | bc)" \
    "$n" "${#pids[@]}"
  for i in $(seq "$n"); do
    $CTR task kill -s SIGKILL "$prefix$i" >/dev/null 2>&1 || true
  done
  sleep 1
  for i in $(seq "$n"); do
    $CTR task delete "$prefix$i" >/dev/null 2>&1 || true
    $CTR container rm "$prefix$i" >/dev/null 2>&1 || true
  done
}
echo "idle sleepers, CPU over ${window} s"
measure "wasm on our shim" idlew io.containerd.wasmtime.v1 "$work/wasm" /sleeper.wasm
measure "native on runc" idlen io.containerd.runc.v2 "$work/native" /sleeper

#!/usr/bin/env bash
# `make bench` (never part of `make test`): the performance goals of issue 11,
# measured in one run on one private containerd, ours against runc where the
# comparison exists, interleaved, min/median/p90. Writes bench/results/latest.tsv
# (one row per measurement), latest.md (the table) and latest.png (the plot),
# and prints the table.
#
# Knobs (environment): RUNS (start-ups per case, default 20), PY_RUNS (CPython
# starts per case, 5), DENSITY (container counts, "100 500 1000"; a count is
# skipped when the machine has less than 12 MB of available memory per
# container), DENSITY_MEMORY_LIMIT (bytes, each density container's
# --memory-limit, default 64 MiB; 0 for none), IDLE_WINDOW (s, 10), HTTP_REQUESTS (20000), TASKS (per loop, 40),
# PROFILE (release), SECTIONS (a subset of "start python throughput http
# density packer mixed verify" to measure again; the other rows are kept from the last run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
source benches/lib.sh
runs=${RUNS:-20}
py_runs=${PY_RUNS:-5}
density=${DENSITY:-100 500 1000}
density_limit=${DENSITY_MEMORY_LIMIT:-67108864}
idle_window=${IDLE_WINDOW:-10}
http_requests=${HTTP_REQUESTS:-20000}
tasks=${TASKS:-40}
work=$PWD/.bench
results=$PWD/bench/results
sections=${SECTIONS:-start python throughput http density packer mixed verify}
want() { [[ " $sections " == *" $1 "* ]]; }
rm -rf "$work" && mkdir -p "$work" "$results"
previous=$work/previous.tsv
if [ -n "${SECTIONS:-}" ] && [ -f "$results/latest.tsv" ]; then cp "$results/latest.tsv" "$previous"; else : >"$previous"; fi
export RESULTS=$work/rows.tsv
: >"$RESULTS"

build_bins "${PROFILE:-release}"
# A thousand shims hold several descriptors each in containerd.
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
start_containerd "$work/containerd" "$BINDIR"
cache=$work/containerd/module-cache
wasmbox=$BINDIR/wasmbox
ctr_run() { $CTR run --rm "$@" >/dev/null </dev/null; }
wasm_rt=(--runtime io.containerd.wasmtime.v1)
runc_rt=(--runtime io.containerd.runc.v2)

# --- images -------------------------------------------------------------------
pack() { # pack FILE NAME [wasmbox pack args…]
  local file=$1 name=$2
  shift 2
  WASMBOX_STORE=$work/store "$wasmbox" pack "$file" -t "bench.test/$name:v1" -o "$work/$name.tar" "$@" >/dev/null
  $CTR image import "$work/$name.tar" >/dev/null
}
clang --target=wasm32-wasi -O2 -o "$work/hello.wasm" examples/hello/hello.c
pack "$work/hello.wasm" hello-wasm
cat >"$work/sleeper.c" <<'C'
#include <unistd.h>
int main(void) { sleep(100000); return 0; }
C
clang --target=wasm32-wasi -O2 -o "$work/sleeper.wasm" "$work/sleeper.c"
pack "$work/sleeper.wasm" sleeper-wasm
mkdir -p "$work/native"
gcc -static -O2 -o "$work/native/hello" examples/hello/hello.c
gcc -static -O2 -o "$work/native/sleeper" "$work/sleeper.c"
native_image "$work/native/hello" hello-native
native_image "$work/native/sleeper" sleeper-native
fetch_cpython "$work/python"
pack "$work/python/python-3.12.0.wasm" python-wasm
cargo run --quiet --release -p wasmbox-tests --example component -- examples/http-hello hello "$work/http-hello.wasm"
pack "$work/http-hello.wasm" http-hello

# --- cold start ---------------------------------------------------------------
if want start; then
  echo "cold start: ctr run --rm of hello world, $runs runs each, interleaved" >&2
  for i in 1 2; do ctr_run "${wasm_rt[@]}" bench.test/hello-wasm:v1 "warm-w$i"; ctr_run "${runc_rt[@]}" bench.test/hello-native:v1 "warm-n$i"; done
  declare -a t_first t_cached t_runc
  for i in $(seq "$runs"); do
    rm -rf "$cache"
    s=$(now_ns); ctr_run "${wasm_rt[@]}" bench.test/hello-wasm:v1 "first-$i"; t_first+=("$(ms_since "$s")")
    s=$(now_ns); ctr_run "${wasm_rt[@]}" bench.test/hello-wasm:v1 "cached-$i"; t_cached+=("$(ms_since "$s")")
    s=$(now_ns); ctr_run "${runc_rt[@]}" bench.test/hello-native:v1 "runc-$i"; t_runc+=("$(ms_since "$s")")
  done
  row start "hello, runc (static native)" "$(stats "${t_runc[@]}")" "" "" "" ""
  row start "hello, first start (compiles)" "$(stats "${t_first[@]}")" "$(median "${t_runc[@]}") ms" \
    "$(ratio "$(median "${t_first[@]}")" "$(median "${t_runc[@]}")")" "" ""
  r=$(ratio "$(median "${t_cached[@]}")" "$(median "${t_runc[@]}")")
  row start "hello, cached start" "$(stats "${t_cached[@]}")" "$(median "${t_runc[@]}") ms" "$r" "≤ 0.30× runc" "$(at_most "$r" 0.30)"
fi

# --- a big real program: CPython 3.12 ------------------------------------------
if want python; then
  # A first start compiles with Winch and runs; its shim then compiles with
  # Cranelift in the background and exits when that is stored. "cached" is
  # measured after that, so it loads the Cranelift artifact.
  echo "CPython 3.12 -c 'print(1)', $py_runs runs each" >&2
  py() { ctr_run "${wasm_rt[@]}" bench.test/python-wasm:v1 "$1" /python-3.12.0.wasm -c 'print(1)'; }
  shims_gone() { # waits (up to 5 min) until no shim of this containerd runs
    local i
    for i in $(seq 3000); do
      pgrep -f "containerd-shim-wasmtime-v1 .*-address $work/containerd/containerd.sock" >/dev/null || return 0
      sleep 0.1
    done
    echo "shims still running after 5 minutes" >&2
  }
  declare -a t_py_first t_py_cached t_py_tier_up
  for i in $(seq "$py_runs"); do
    shims_gone
    rm -rf "$cache"
    s=$(now_ns); py "py-first-$i"; t_py_first+=("$(ms_since "$s")")
    s=$(now_ns); shims_gone; t_py_tier_up+=("$(ms_since "$s")")
    s=$(now_ns); py "py-cached-$i"; t_py_cached+=("$(ms_since "$s")")
  done
  m=$(median "${t_py_first[@]}")
  row python "CPython first start (Winch, 26 MB)" "$(stats "${t_py_first[@]}")" "" "" "≤ 3000 ms" "$(at_most "$m" 3000)"
  row python "CPython: its shim compiles with Cranelift, then exits (after ctr run)" "$(stats "${t_py_tier_up[@]}")" "" "" "" ""
  m=$(median "${t_py_cached[@]}")
  row python "CPython cached start (Cranelift)" "$(stats "${t_py_cached[@]}")" "" "" "≤ 500 ms" "$(at_most "$m" 500)"
fi

# --- throughput ---------------------------------------------------------------
if want throughput; then
  echo "throughput: start→exit tasks per second, sequential and 8-way" >&2
  loop() { # loop RUNTIME IMAGE PREFIX: $tasks runs back to back
    local rt=$1 image=$2 prefix=$3 i
    for i in $(seq "$tasks"); do ctr_run --runtime "$rt" "$image" "$prefix-$i"; done
  }
  tput() { # tput WAYS RUNTIME IMAGE: tasks per second over WAYS parallel loops
    local ways=$1 s w
    s=$(now_ns)
    for w in $(seq "$ways"); do loop "$2" "$3" "tp$ways-$w-$RANDOM" & done
    wait
    echo "scale=1; $ways * $tasks * 1000 / $(ms_since "$s")" | bc
  }
  for ways in 1 8; do
    ours=$(tput "$ways" io.containerd.wasmtime.v1 bench.test/hello-wasm:v1)
    theirs=$(tput "$ways" io.containerd.runc.v2 bench.test/hello-native:v1)
    r=$(ratio "$ours" "$theirs")
    goal="" verdict=""
    if [ "$ways" = 1 ]; then goal="≥ 3× runc"; verdict=$(at_least "$r" 3); fi
    row throughput "start→exit, $ways-way (tasks/s)" "$ours" "$theirs" "$r" "$goal" "$verdict"
  done
fi

# --- wasi:http ------------------------------------------------------------------
if want http; then
  echo "wasi:http: ab -n $http_requests -c 10 against examples/http-hello" >&2
  port=$(free_port)
  # --null-io: a detached task's output FIFOs have no reader, and after
  # 64 KiB of unread output the server would wait 2 s once, then drop it
  # (engine/src/http/output.rs); the row measures the server, not that.
  $CTR run -d --null-io "${wasm_rt[@]}" --net-host --annotation dev.wasmbox.wasi.network=host \
    --annotation "dev.wasmbox.http.port=$port" bench.test/http-hello:v1 http-bench >/dev/null
  wait_until "$work/containerd/containerd.log" curl -fsS "http://127.0.0.1:$port/"
  ab -q -n 1000 -c 10 "http://127.0.0.1:$port/warm" >/dev/null
  ab -q -n "$http_requests" -c 10 "http://127.0.0.1:$port/bench" >"$work/ab.txt"
  rps=$(awk '/^Requests per second/ {print $4}' "$work/ab.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$work/ab.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/ab.txt")
  failed=$(awk '/^Failed requests/ {print $3}' "$work/ab.txt")
  remove_task http-bench
  row http "http-hello requests/s at -c 10" "$rps" "17400 (reference shim)" "$(ratio "$rps" 17400)" "≥ 21000" "$(at_least "$rps" 21000)"
  row http "http-hello latency p50 / p99 (ms)" "$p50 / $p99 ($failed failed)" "" "" "p99 < 2 ms" "$(below "$p99" 2)"
fi

# --- density and idle cost ------------------------------------------------------
start_all() { # start_all RUNTIME IMAGE PREFIX N PROGRAM: ms until all N run
  local rt=$1 image=$2 prefix=$3 n=$4 program=$5 s
  s=$(now_ns)
  local limit=()
  [ "$density_limit" = 0 ] || limit=(--memory-limit "$density_limit")
  seq "$n" | xargs -P 8 -I{} $CTR run -d --runtime "$rt" "${limit[@]}" "$image" "$prefix{}" "$program" >/dev/null
  until [ "$($CTR task ls | awk -v p="^$prefix" '$1 ~ p && $3 == "RUNNING"' | wc -l)" -ge "$n" ]; do sleep 0.2; done
  ms_since "$s"
}
want density || density=""
for n in $density; do
  avail_mb=$(awk '/^MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)
  if [ $((avail_mb / n)) -lt 12 ]; then
    echo "density N=$n skipped: $avail_mb MB available" >&2
    row density "N=$n" "skipped ($avail_mb MB available)" "" "" "" ""
    continue
  fi
  echo "density: N=$n sleepers each, memory limit $density_limit" >&2
  for rt in wasm runc; do
    if [ $rt = wasm ]; then
      t=$(start_all io.containerd.wasmtime.v1 bench.test/sleeper-wasm:v1 "dw$n-" "$n" /sleeper.wasm)
    else
      t=$(start_all io.containerd.runc.v2 bench.test/sleeper-native:v1 "dn$n-" "$n" /sleeper)
    fi
    sleep 2
    prefix=$([ $rt = wasm ] && echo "dw$n-" || echo "dn$n-")
    mapfile -t pids < <(pids_of "$prefix")
    pss=$(echo "scale=2; $(pss_kib "${pids[@]}") / 1024 / $n" | bc)
    cpu=$(cpu_ms_per_s "$idle_window" "${pids[@]}")
    cpu_each=$(echo "scale=4; $cpu / $n" | bc)
    eval "time_$rt=$t pss_$rt=$pss cpu_$rt=$cpu_each"
    remove_all "$prefix" "$n"
  done
  row density "N=$n: ms until all run" "$time_wasm" "$time_runc" "$(ratio "$time_wasm" "$time_runc")" "" ""
  row density "N=$n: PSS per container (MB), $((density_limit >> 20)) MiB limit each" "$pss_wasm" "$pss_runc" "$(ratio "$pss_wasm" "$pss_runc")" "≤ 3 MB" "$(at_most "$pss_wasm" 3)"
  row idle "N=$n: CPU per idle container (ms/s)" "$cpu_wasm" "$cpu_runc" "" "≤ 0.05 ms/s" "$(at_most "$cpu_wasm" 0.05)"
done
stop_services
trap - EXIT

# --- the packer ---------------------------------------------------------------
if want packer; then RUNS=${PACK_RUNS:-5} benches/pack_push.sh >&2; fi

# --- mixed pods -------------------------------------------------------------------
# CreateContainer + StartContainer of a Wasm container through the CRI, in a
# Wasm-only pod and in a pod with a running Linux sidecar (its own
# containerd, CNI network and registry: the CRI test harness).
if want mixed; then
  echo "mixed pods: Wasm container start through the CRI, $runs runs each, interleaved" >&2
  cargo run --quiet --release -p wasmbox-tests --example mixed_pod_startup -- "$runs" >"$work/mixed.txt"
  only=$(awk -F'\t' '$1 == "wasm-only" {print $2}' "$work/mixed.txt")
  only_median=$(awk -F'\t' '$1 == "wasm-only" {print $3}' "$work/mixed.txt")
  mixed=$(awk -F'\t' '$1 == "mixed" {print $2}' "$work/mixed.txt")
  mixed_median=$(awk -F'\t' '$1 == "mixed" {print $3}' "$work/mixed.txt")
  r=$(ratio "$mixed_median" "$only_median")
  row mixed "Wasm container start, Wasm-only pod" "$only" "" "" "" ""
  row mixed "Wasm container start, pod with a Linux sidecar" "$mixed" "$only_median ms" "$r" "not slower (≤ 1.10×)" "$(at_most "$r" 1.10)"
fi

# --- the run-time policy ----------------------------------------------------------
# What WASMBOX_POLICY adds to a cached start (benches/verify.sh: its own
# registry and two containerds, one enforcing a sigstoreSigned policy).
if want verify; then RUNS=$runs benches/verify.sh; fi

# The rows in section order: this run's, and the last run's for the sections
# not measured again (idle rows come with density's).
{
  printf 'section\tmeasurement\tours\tbaseline\tratio\tgoal\tverdict\n'
  for section in start python throughput http density idle packer mixed verify; do
    measured=$section
    [ "$section" = idle ] && measured=density
    if want "$measured"; then from=$RESULTS; else from=$previous; fi
    awk -F'\t' -v s="$section" '$1 == s' "$from"
  done
} >"$results/latest.tsv"
SECTIONS_MEASURED=${SECTIONS:-} /usr/bin/python3 benches/report.py "$results/latest.tsv" "$results/latest.md" "$results/latest.png"
cat "$results/latest.md"

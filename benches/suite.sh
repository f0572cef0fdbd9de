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
# --memory-limit, default 64 MiB; 0 for none), IDLE_WINDOW (s, 10),
# HTTP_SECONDS (each wrk run, 5), HTTP_ROUNDS (3), HTTP_AB_REQUESTS (20000), TASKS (per loop, 40),
# PROFILE (release), SECTIONS (a subset of "start python throughput http
# density packer mixed verify" to measure again; the other rows are kept from the last run).
# Peers: WASMBOX_BENCH_RUNWASI (the reference shim's binary: containerd/runwasi's
# containerd-shim-wasmtime-v1, built outside this repository, README
# "Performance"; unset: its rows say "not measured") and WASMBOX_BENCH_WASMTIME
# (wasmtime 48's CLI for `wasmtime serve`; unset: scripts/wasmtime-cli.sh
# builds it once; "none": not measured).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
source benches/lib.sh
runs=${RUNS:-20}
py_runs=${PY_RUNS:-5}
density=${DENSITY:-100 500 1000}
density_limit=${DENSITY_MEMORY_LIMIT:-67108864}
idle_window=${IDLE_WINDOW:-10}
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
# The peers, when their binaries are there (README, "Performance"): the
# reference shim registered on this containerd as io.containerd.runwasi.v1.
runwasi_rt=""
if [ -n "${WASMBOX_BENCH_RUNWASI:-}" ]; then
  [ -x "$WASMBOX_BENCH_RUNWASI" ] || { echo "WASMBOX_BENCH_RUNWASI=$WASMBOX_BENCH_RUNWASI is not an executable file" >&2; exit 1; }
  runwasi_rt=io.containerd.runwasi.v1
  mkdir -p "$work/peers"
  ln -s "$WASMBOX_BENCH_RUNWASI" "$work/peers/containerd-shim-runwasi-v1"
  export CONTAINERD_EXTRA_PATH=$work/peers
fi
wasmtime_cli=${WASMBOX_BENCH_WASMTIME:-$(scripts/wasmtime-cli.sh)}
[ "$wasmtime_cli" != none ] || wasmtime_cli=""
start_containerd "$work/containerd" "$BINDIR"
cache=$work/containerd/module-cache
wasmbox=$BINDIR/wasmbox
ctr_run() { $CTR run --rm "$@" >/dev/null </dev/null; }
wasm_rt=(--runtime io.containerd.wasmtime.v1)
runc_rt=(--runtime io.containerd.runc.v2)
# The shared shim (README, "The shared shim"): a group on the host network.
shared_opts=(--net-host --annotation dev.wasmbox.shim.group=bench)
# A sleeping container of the group keeps its shim up between `ctr run --rm`s,
# as a group's long-running containers do.
keep_shared_shim() { $CTR run -d --null-io "${wasm_rt[@]}" "${shared_opts[@]}" bench.test/sleeper-wasm:v1 "${1}1" /sleeper.wasm >/dev/null; }
let_shared_shim_go() { remove_all "$1" 1; }

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
  for i in 1 2; do
    ctr_run "${wasm_rt[@]}" bench.test/hello-wasm:v1 "warm-w$i"
    ctr_run "${runc_rt[@]}" bench.test/hello-native:v1 "warm-n$i"
    [ -z "$runwasi_rt" ] || ctr_run --runtime "$runwasi_rt" bench.test/hello-wasm:v1 "warm-r$i"
  done
  declare -a t_first t_cached t_runc t_ref t_shared
  keep_shared_shim shared-keeper-
  ctr_run "${wasm_rt[@]}" "${shared_opts[@]}" bench.test/hello-wasm:v1 warm-shared
  for i in $(seq "$runs"); do
    rm -rf "$cache"
    s=$(now_ns); ctr_run "${wasm_rt[@]}" bench.test/hello-wasm:v1 "first-$i"; t_first+=("$(ms_since "$s")")
    s=$(now_ns); ctr_run "${wasm_rt[@]}" bench.test/hello-wasm:v1 "cached-$i"; t_cached+=("$(ms_since "$s")")
    s=$(now_ns); ctr_run "${runc_rt[@]}" bench.test/hello-native:v1 "runc-$i"; t_runc+=("$(ms_since "$s")")
    if [ -n "$runwasi_rt" ]; then
      s=$(now_ns); ctr_run --runtime "$runwasi_rt" bench.test/hello-wasm:v1 "ref-$i"; t_ref+=("$(ms_since "$s")")
    fi
    s=$(now_ns); ctr_run "${wasm_rt[@]}" "${shared_opts[@]}" bench.test/hello-wasm:v1 "shared-$i"; t_shared+=("$(ms_since "$s")")
  done
  let_shared_shim_go shared-keeper-
  row start "hello, runc (static native)" "$(stats "${t_runc[@]}")" "" "" "" ""
  row start "hello, first start (compiles)" "$(stats "${t_first[@]}")" "$(median "${t_runc[@]}") ms" \
    "$(ratio "$(median "${t_first[@]}")" "$(median "${t_runc[@]}")")" "" ""
  r=$(ratio "$(median "${t_cached[@]}")" "$(median "${t_runc[@]}")")
  row start "hello, cached start" "$(stats "${t_cached[@]}")" "$(median "${t_runc[@]}") ms" "$r" "≤ 0.45× runc" "$(at_most "$r" 0.45)"
  r=$(ratio "$(median "${t_shared[@]}")" "$(median "${t_runc[@]}")")
  row start "hello, cached start, shared shim (--net-host)" "$(stats "${t_shared[@]}")" "$(median "${t_runc[@]}") ms" "$r" "≤ 0.30× runc" "$(at_most "$r" 0.30)"
  if [ -n "$runwasi_rt" ]; then
    row start "hello, reference shim (its own cache)" "$(stats "${t_ref[@]}")" "$(median "${t_cached[@]}") ms (ours, cached)" \
      "$(ratio "$(median "${t_cached[@]}")" "$(median "${t_ref[@]}")")" "" ""
  else
    row start "hello, reference shim" "not measured" "" "" "" ""
  fi
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
  loop() { # loop RUNTIME IMAGE PREFIX: $tasks runs back to back (with $loop_opts)
    local rt=$1 image=$2 prefix=$3 i
    for i in $(seq "$tasks"); do ctr_run --runtime "$rt" $loop_opts "$image" "$prefix-$i"; done
  }
  loop_opts=
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
    row throughput "start→exit, $ways-way (tasks/s)" "$ours" "$theirs" "$r" "" ""
    keep_shared_shim tp-keeper-
    loop_opts="${shared_opts[*]}"
    shared=$(tput "$ways" io.containerd.wasmtime.v1 bench.test/hello-wasm:v1)
    loop_opts=""
    let_shared_shim_go tp-keeper-
    r=$(ratio "$shared" "$theirs")
    goal="" verdict=""
    if [ "$ways" = 1 ]; then goal="≥ 3× runc"; verdict=$(at_least "$r" 3); fi
    row throughput "start→exit, $ways-way, shared shim (tasks/s)" "$shared" "$theirs" "$r" "$goal" "$verdict"
  done
fi

# --- wasi:http ------------------------------------------------------------------
# The same component served three ways, one after another in each round:
# by our shim, by the reference shim (containerd/runwasi's, when
# WASMBOX_BENCH_RUNWASI names its binary) on the same containerd, and by
# `wasmtime serve` 48 (WASMBOX_BENCH_WASMTIME, else scripts/wasmtime-cli.sh's
# build). wrk, keep-alive, one thread; requests/s is the median over rounds.
if want http; then
  http_seconds=${HTTP_SECONDS:-5}
  http_rounds=${HTTP_ROUNDS:-3}
  echo "wasi:http: wrk -c 1/10/50 for $http_seconds s, $http_rounds rounds, against examples/http-hello" >&2
  declare -A http_url
  port=$(free_port)
  # --null-io: a detached task's output FIFOs have no reader, and after
  # 64 KiB of unread output the server would wait 2 s once, then drop it
  # (engine/src/http/output.rs); the row measures the server, not that.
  $CTR run -d --null-io "${wasm_rt[@]}" --net-host --annotation dev.wasmbox.wasi.network=host \
    --annotation "dev.wasmbox.http.port=$port" bench.test/http-hello:v1 http-bench >/dev/null
  http_url[wasmbox]=http://127.0.0.1:$port/
  if [ -n "$runwasi_rt" ]; then
    port=$(free_port)
    $CTR run -d --null-io --runtime "$runwasi_rt" --net-host \
      --env "WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:$port" bench.test/http-hello:v1 http-bench-ref >/dev/null
    http_url[reference]=http://127.0.0.1:$port/
  fi
  if [ -n "$wasmtime_cli" ]; then
    port=$(free_port)
    "$wasmtime_cli" serve --addr "127.0.0.1:$port" "$work/http-hello.wasm" >/dev/null 2>"$work/wasmtime-serve.log" &
    wasmtime_serve_pid=$!
    http_url[serve]=http://127.0.0.1:$port/
  fi
  for server in "${!http_url[@]}"; do
    wait_until "$work/containerd/containerd.log" curl -fsS "${http_url[$server]}"
    wrk -t1 -c10 -d2s "${http_url[$server]}warm" >/dev/null
  done
  declare -A http_rps http_latency
  for c in 1 10 50; do
    for server in "${!http_url[@]}"; do
      rates=()
      for round in $(seq "$http_rounds"); do
        wrk -t1 -c"$c" -d"${http_seconds}s" --latency "${http_url[$server]}bench" >"$work/wrk-$server-$c-$round.txt"
        rates+=("$(wrk_rate "$work/wrk-$server-$c-$round.txt")")
      done
      http_rps[$server-$c]=$(median "${rates[@]}")
      http_latency[$server-$c]=$(wrk_latency "$work/wrk-$server-$c-$http_rounds.txt")
    done
  done
  # And a connection per request (ab without -k), the load of the last
  # round: the reference shim's keep-alive figures above show a delayed-ACK
  # stall of its own (40 ms a request), which this load never meets.
  declare -A http_close
  for server in "${!http_url[@]}"; do
    ab -q -n "${HTTP_AB_REQUESTS:-20000}" -c 10 "${http_url[$server]}ab" >"$work/ab-$server.txt"
    http_close[$server]=$(awk '/^Requests per second/ {print $4}' "$work/ab-$server.txt")
  done
  remove_task http-bench
  [ -z "$runwasi_rt" ] || remove_task http-bench-ref
  [ -z "${wasmtime_serve_pid:-}" ] || kill "$wasmtime_serve_pid"
  peer() { echo "${http_rps[$1-$2]:-not measured}"; }
  for c in 1 10 50; do
    ours=${http_rps[wasmbox-$c]}
    goal_ref="" goal_serve="" goal_p99="" v_ref="" v_serve="" v_p99=""
    if [ "$c" = 10 ]; then goal_ref="≥ 1.2× reference shim" goal_serve="≥ 0.8× wasmtime serve" goal_p99="p99 < 2 ms"; fi
    for who in reference serve; do
      theirs=$(peer "$who" "$c")
      r="" v=""
      if [ "$theirs" != "not measured" ]; then
        r=$(ratio "$ours" "$theirs")
        if [ "$c" = 10 ]; then v=$(at_least "$r" "$([ $who = reference ] && echo 1.2 || echo 0.8)"); fi
      fi
      label=$([ $who = reference ] && echo "reference shim" || echo "wasmtime serve")
      goal=$([ $who = reference ] && echo "$goal_ref" || echo "$goal_serve")
      row http "http-hello -c $c: requests/s, against $label" "$ours" "$theirs" "$r" "$goal" "$v"
    done
    p99=${http_latency[wasmbox-$c]#* / }
    [ "$c" = 10 ] && v_p99=$(below "$p99" 2)
    row http "http-hello -c $c: latency p50 / p99 (ms)" "${http_latency[wasmbox-$c]}" \
      "reference ${http_latency[reference-$c]:-not measured}; wasmtime serve ${http_latency[serve-$c]:-not measured}" "" "$goal_p99" "$v_p99"
  done
  for who in reference serve; do
    theirs=${http_close[$who]:-not measured} r="" goal="" v=""
    [ "$theirs" = "not measured" ] || r=$(ratio "${http_close[wasmbox]}" "$theirs")
    label=$([ $who = reference ] && echo "reference shim" || echo "wasmtime serve")
    # The goal against the reference shim holds for this load too: its
    # keep-alive rate is held down by its own stall.
    if [ $who = reference ]; then
      goal="≥ 1.2× reference shim"
      [ -z "$r" ] || v=$(at_least "$r" 1.2)
    fi
    row http "http-hello -c 10, a connection per request (ab): requests/s, against $label" "${http_close[wasmbox]}" "$theirs" "$r" "$goal" "$v"
  done
fi

# --- density and idle cost ------------------------------------------------------
start_all() { # start_all RUNTIME IMAGE PREFIX N PROGRAM [ctr run options…]: ms until all N run
  local rt=$1 image=$2 prefix=$3 n=$4 program=$5 s
  shift 5
  s=$(now_ns)
  local limit=()
  [ "$density_limit" = 0 ] || limit=(--memory-limit "$density_limit")
  seq "$n" | xargs -P 8 -I{} $CTR run -d --runtime "$rt" "${limit[@]}" "$@" "$image" "$prefix{}" "$program" >/dev/null
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
  time_ref="" pss_ref=""
  for rt in wasm shared runc ${runwasi_rt:+ref}; do
    case $rt in
      shared) prefix="ds$n-" t=$(start_all io.containerd.wasmtime.v1 bench.test/sleeper-wasm:v1 "ds$n-" "$n" /sleeper.wasm "${shared_opts[@]}") ;;
      wasm) prefix="dw$n-" t=$(start_all io.containerd.wasmtime.v1 bench.test/sleeper-wasm:v1 "dw$n-" "$n" /sleeper.wasm) ;;
      runc) prefix="dn$n-" t=$(start_all io.containerd.runc.v2 bench.test/sleeper-native:v1 "dn$n-" "$n" /sleeper) ;;
      ref) prefix="dr$n-" t=$(start_all "$runwasi_rt" bench.test/sleeper-wasm:v1 "dr$n-" "$n" /sleeper.wasm) ;;
    esac
    sleep 2
    mapfile -t pids < <(pids_of "$prefix")
    pss=$(echo "scale=2; $(pss_kib "${pids[@]}") / 1024 / $n" | bc)
    cpu=$(cpu_ms_per_s "$idle_window" "${pids[@]}")
    cpu_each=$(echo "scale=4; $cpu / $n" | bc)
    eval "time_$rt=$t pss_$rt=$pss cpu_$rt=$cpu_each"
    remove_all "$prefix" "$n"
  done
  row density "N=$n: ms until all run" "$time_wasm" "$time_runc" "$(ratio "$time_wasm" "$time_runc")" "" ""
  row density "N=$n: PSS per container (MB), $((density_limit >> 20)) MiB limit each" "$pss_wasm" "$pss_runc" "$(ratio "$pss_wasm" "$pss_runc")" "≤ 3 MB" "$(at_most "$pss_wasm" 3)"
  if [ -n "$runwasi_rt" ]; then
    row density "N=$n: PSS per container (MB), reference shim" "$pss_wasm" "$pss_ref" "$(ratio "$pss_wasm" "$pss_ref")" "" ""
  else
    row density "N=$n: PSS per container (MB), reference shim" "$pss_wasm" "not measured" "" "" ""
  fi
  row idle "N=$n: CPU per idle container (ms/s)" "$cpu_wasm" "$cpu_runc" "" "≤ 0.05 ms/s" "$(at_most "$cpu_wasm" 0.05)"
  # The shared shim: one process for all N (its goals are for N=1000).
  r=$(ratio "$time_shared" "$time_runc") goal="" v=""
  [ "$n" != 1000 ] || { goal="≤ 0.25× runc"; v=$(at_most "$r" 0.25); }
  row density "N=$n: ms until all run, shared shim (--net-host)" "$time_shared" "$time_runc" "$r" "$goal" "$v"
  goal="" v=""
  [ "$n" != 1000 ] || { goal="≤ 0.5 MB"; v=$(at_most "$pss_shared" 0.5); }
  row density "N=$n: PSS per container (MB), shared shim" "$pss_shared" "$pss_runc" "$(ratio "$pss_shared" "$pss_runc")" "$goal" "$v"
  row idle "N=$n: CPU per idle container (ms/s), shared shim" "$cpu_shared" "$cpu_runc" "" "0" "$(at_most "$cpu_shared" 0)"
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

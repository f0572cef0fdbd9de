#!/usr/bin/env bash
# Benchmark (not a test): what the run-time policy (WASMBOX_POLICY) adds to a
# cached start. The same signed hello from a local registry, `ctr run --rm`
# through a containerd without a policy and through one whose shims enforce
# a sigstoreSigned policy, the latter with its verdict cache emptied before
# each run (signatures fetched and checked) and kept (the verdict reused);
# interleaved. Rows go to $RESULTS (`make bench`), or are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
source benches/lib.sh
runs=${RUNS:-20}
work=$PWD/.bench-verify
rm -rf "$work" && mkdir -p "$work"
export RESULTS=${RESULTS:-$work/rows.tsv}

build_bins "${PROFILE:-release}"
wasmbox=$BINDIR/wasmbox
wasm_rt=(--runtime io.containerd.wasmtime.v1)
clang --target=wasm32-wasi -O2 -o "$work/hello.wasm" examples/hello/hello.c
start_registry "$work/registry"
image=$REGISTRY/bench/hello:v1
WASMBOX_STORE=$work/store "$wasmbox" pack "$work/hello.wasm" -t "$image" --push --plain-http --json >/dev/null
WASMBOX_PASSWORD=bench "$wasmbox" generate-key --output-key-prefix "$work/bench" >/dev/null
WASMBOX_PASSWORD=bench "$wasmbox" sign "$image" --key "$work/bench.key" --plain-http >/dev/null
cat >"$work/policy.json" <<JSON
{"default": [{"type": "sigstoreSigned", "keyPath": "$work/bench.pub", "signedIdentity": {"type": "matchRepository"}}]}
JSON

start_containerd "$work/plain" "$BINDIR"
plain=$CTR
CONTAINERD_ENV="WASMBOX_POLICY=$work/policy.json" start_containerd "$work/policy" "$BINDIR"
policy=$CTR
for c in "$plain" "$policy"; do
  $c image pull --plain-http "$image" >/dev/null
  $c run --rm "${wasm_rt[@]}" "$image" warm >/dev/null </dev/null
done
echo "run-time policy: ctr run --rm of a signed hello, $runs runs each, interleaved" >&2
declare -a t_plain t_checked t_reused
for i in $(seq "$runs"); do
  s=$(now_ns); $plain run --rm "${wasm_rt[@]}" "$image" "plain-$i" >/dev/null </dev/null; t_plain+=("$(ms_since "$s")")
  rm -rf "$work/policy/verified"
  s=$(now_ns); $policy run --rm "${wasm_rt[@]}" "$image" "checked-$i" >/dev/null </dev/null; t_checked+=("$(ms_since "$s")")
  s=$(now_ns); $policy run --rm "${wasm_rt[@]}" "$image" "reused-$i" >/dev/null </dev/null; t_reused+=("$(ms_since "$s")")
done
plain_median=$(median "${t_plain[@]}")
row verify "signed hello, cached start, no policy" "$(stats "${t_plain[@]}")" "" "" "" ""
row verify "same, policy: signatures fetched and checked" "$(stats "${t_checked[@]}")" "$plain_median ms" \
  "$(ratio "$(median "${t_checked[@]}")" "$plain_median")" "" ""
row verify "same, policy: verdict cached (per digest)" "$(stats "${t_reused[@]}")" "$plain_median ms" \
  "$(ratio "$(median "${t_reused[@]}")" "$plain_median")" "" ""

#!/usr/bin/env bash
# Benchmark (not a test): wasmbox pack+push of a 25 MB module against skopeo
# copy of the same image from an OCI layout to the same local registry,
# interleaved; and wasmbox pack alone against sha256sum + gzip -6.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/registry.sh
runs=${RUNS:-5}
work=$PWD/.bench
rm -rf "$work" && mkdir -p "$work"

cargo build --quiet --release -p wasmbox
cargo run --quiet --release -p wasmbox-tests --example big_module -- 25 "$work/big.wasm"
wasmbox=$PWD/target/release/wasmbox
start_registry "$work/registry"
echo "module: $(du -h "$work/big.wasm" | cut -f1), registry: $REGISTRY, runs: $runs"

# The OCI layout skopeo pushes from (the same image wasmbox pushes).
WASMBOX_STORE=$work/store0 "$wasmbox" pack "$work/big.wasm" -t bench/big:v1 --oci-layout "$work/layout" >/dev/null

now() { date +%s.%N; }
declare -a t_wasmbox t_skopeo t_pack t_base
for i in $(seq "$runs"); do
  rm -rf "$work/store"
  s=$(now); WASMBOX_STORE=$work/store "$wasmbox" pack "$work/big.wasm" -t "$REGISTRY/wasmbox-$i:v1" --push --plain-http >/dev/null; e=$(now)
  t_wasmbox+=("$(echo "$e - $s" | bc)")
  s=$(now); skopeo copy -q --dest-tls-verify=false "oci:$work/layout:v1" "docker://$REGISTRY/skopeo-$i:v1" >/dev/null; e=$(now)
  t_skopeo+=("$(echo "$e - $s" | bc)")
  rm -rf "$work/store"
  s=$(now); WASMBOX_STORE=$work/store "$wasmbox" pack "$work/big.wasm" -t "bench/pack-$i:v1" >/dev/null; e=$(now)
  t_pack+=("$(echo "$e - $s" | bc)")
  s=$(now); sha256sum "$work/big.wasm" >/dev/null; gzip -6 -c "$work/big.wasm" | sha256sum >/dev/null; e=$(now)
  t_base+=("$(echo "$e - $s" | bc)")
done

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %.3fs  median %.3fs  max %.3fs", a[1], a[int((NR+1)/2)], a[NR]}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "wasmbox pack+push : $(stats "${t_wasmbox[@]}")"
echo "skopeo copy (push): $(stats "${t_skopeo[@]}")"
echo "wasmbox pack      : $(stats "${t_pack[@]}")"
echo "sha256sum+gzip -6 : $(stats "${t_base[@]}")"
echo "ratio pack+push / skopeo copy : $(echo "scale=2; $(median "${t_wasmbox[@]}") / $(median "${t_skopeo[@]}")" | bc)  (goal <= 1.2)"
echo "ratio pack / sha256+gzip      : $(echo "scale=2; $(median "${t_pack[@]}") / $(median "${t_base[@]}")" | bc)"

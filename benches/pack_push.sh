#!/usr/bin/env bash
# Benchmark (not a test): wasmbox pack+push of the 26 MB CPython module
# against skopeo copy of the same image from an OCI layout, interleaved, with
# gzip (the default) and zstd layers. Each round uses a fresh registry so
# that neither tool can skip the upload (skopeo remembers where blobs live
# and would mount them instead of sending them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
source benches/lib.sh
runs=${RUNS:-5}
work=$PWD/.bench-pack-push
rm -rf "$work" && mkdir -p "$work"

# The whole workspace, as the other benchmarks build it: `-p wasmbox` alone
# would unify wasmtime's features differently and compile it all again.
build_bins release
fetch_cpython "$work"
mv "$work/python-3.12.0.wasm" "$work/big.wasm"
wasmbox=$BINDIR/wasmbox
echo "module: $(du -h "$work/big.wasm" | cut -f1), runs: $runs"

# The OCI layout skopeo pushes from (the same image wasmbox pushes).
WASMBOX_STORE=$work/store0 "$wasmbox" pack "$work/big.wasm" -t bench/big:v1 --oci-layout "$work/layout" >/dev/null
WASMBOX_STORE=$work/store0 "$wasmbox" pack "$work/big.wasm" -t bench/big-zstd:v1 --compression zstd --oci-layout "$work/layout-zstd" >/dev/null

now() { date +%s.%N; }
declare -a t_packpush t_push t_skopeo t_pack t_base t_packpush_zstd t_skopeo_zstd
for i in $(seq "$runs"); do
  start_registry "$work/registry-$i"
  rm -rf "$work/store"
  s=$(now); WASMBOX_STORE=$work/store "$wasmbox" pack "$work/big.wasm" -t "$REGISTRY/packpush:v1" --push --plain-http >/dev/null 2>&1; e=$(now)
  t_packpush+=("$(echo "$e - $s" | bc)")
  WASMBOX_STORE=$work/store "$wasmbox" pack "$work/big.wasm" -t "$REGISTRY/push:v1" >/dev/null
  s=$(now); WASMBOX_STORE=$work/store "$wasmbox" push "$REGISTRY/push:v1" --plain-http >/dev/null 2>&1; e=$(now)
  t_push+=("$(echo "$e - $s" | bc)")
  s=$(now); skopeo copy -q --dest-tls-verify=false "oci:$work/layout:v1" "docker://$REGISTRY/skopeo:v1" >/dev/null; e=$(now)
  t_skopeo+=("$(echo "$e - $s" | bc)")
  rm -rf "$work/store"
  s=$(now); WASMBOX_STORE=$work/store "$wasmbox" pack "$work/big.wasm" -t "$REGISTRY/packpush-zstd:v1" --compression zstd --push --plain-http >/dev/null 2>&1; e=$(now)
  t_packpush_zstd+=("$(echo "$e - $s" | bc)")
  s=$(now); skopeo copy -q --dest-tls-verify=false "oci:$work/layout-zstd:v1" "docker://$REGISTRY/skopeo-zstd:v1" >/dev/null; e=$(now)
  t_skopeo_zstd+=("$(echo "$e - $s" | bc)")
  rm -rf "$work/store"
  s=$(now); WASMBOX_STORE=$work/store "$wasmbox" pack "$work/big.wasm" -t "bench/pack-$i:v1" >/dev/null; e=$(now)
  t_pack+=("$(echo "$e - $s" | bc)")
  s=$(now); sha256sum "$work/big.wasm" >/dev/null; gzip -6 -c "$work/big.wasm" | sha256sum >/dev/null; e=$(now)
  t_base+=("$(echo "$e - $s" | bc)")
done

seconds() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %.3fs  median %.3fs  max %.3fs", a[1], a[int((NR+1)/2)], a[NR]}'; }
echo "wasmbox pack --push : $(seconds "${t_packpush[@]}")"
echo "wasmbox push        : $(seconds "${t_push[@]}")"
echo "skopeo copy         : $(seconds "${t_skopeo[@]}")"
echo "wasmbox pack        : $(seconds "${t_pack[@]}")"
echo "sha256sum + gzip -6 : $(seconds "${t_base[@]}")"
echo "ratio push / skopeo copy           : $(echo "scale=2; $(median "${t_push[@]}") / $(median "${t_skopeo[@]}")" | bc)  (goal <= 1.2)"
echo "wasmbox pack --push, zstd : $(seconds "${t_packpush_zstd[@]}")"
echo "skopeo copy, zstd         : $(seconds "${t_skopeo_zstd[@]}")"
echo "ratio pack+push / skopeo copy      : $(echo "scale=2; $(median "${t_packpush[@]}") / $(median "${t_skopeo[@]}")" | bc)  (goal <= 2)"
echo "same, zstd layers                  : $(echo "scale=2; $(median "${t_packpush_zstd[@]}") / $(median "${t_skopeo_zstd[@]}")" | bc)"
echo "ratio pack / (sha256sum + gzip -6) : $(echo "scale=2; $(median "${t_pack[@]}") / $(median "${t_base[@]}")" | bc)"

# Rows for benches/suite.sh's table when run from it.
if [ -n "${RESULTS:-}" ]; then
  r=$(ratio "$(median "${t_push[@]}")" "$(median "${t_skopeo[@]}")")
  printf 'packer\twasmbox push of the CPython module (s)\t%s\t%s (skopeo copy)\t%s\t≤ 1.2× skopeo\t%s\n' \
    "$(median "${t_push[@]}")" "$(median "${t_skopeo[@]}")" "$r" \
    "$([ "$(echo "$r <= 1.2" | bc)" = 1 ] && echo met || echo missed)" >>"$RESULTS"
  r=$(ratio "$(median "${t_packpush[@]}")" "$(median "${t_skopeo[@]}")")
  printf 'packer\twasmbox pack --push of the CPython module (s)\t%s\t%s (skopeo copy)\t%s\t≤ 2× skopeo\t%s\n' \
    "$(median "${t_packpush[@]}")" "$(median "${t_skopeo[@]}")" "$r" "$(at_most "$r" 2)" >>"$RESULTS"
  r=$(ratio "$(median "${t_packpush_zstd[@]}")" "$(median "${t_skopeo_zstd[@]}")")
  printf 'packer\twasmbox pack --push --compression zstd (s)\t%s\t%s (skopeo copy, zstd)\t%s\t\t\n' \
    "$(median "${t_packpush_zstd[@]}")" "$(median "${t_skopeo_zstd[@]}")" "$r" >>"$RESULTS"
fi

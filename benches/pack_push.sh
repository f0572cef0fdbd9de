#!/usr/bin/env bash
# Benchmark (not a test): wasmbox pack+push of a 25 MB module against skopeo
# copy of the same image from an OCI layout, interleaved. Each round uses a
# fresh registry so that neither tool can skip the upload (skopeo remembers
# where blobs live and would mount them instead of sending them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
runs=${RUNS:-5}
work=$PWD/.bench-pack-push
rm -rf "$work" && mkdir -p "$work"

# The whole workspace, as the other benchmarks build it: `-p wasmbox` alone
# would unify wasmtime's features differently and compile it all again.
build_bins release
cargo run --quiet --release -p wasmbox-tests --example big_module -- 25 "$work/big.wasm"
wasmbox=$BINDIR/wasmbox
echo "module: $(du -h "$work/big.wasm" | cut -f1), runs: $runs"

# The OCI layout skopeo pushes from (the same image wasmbox pushes).
WASMBOX_STORE=$work/store0 "$wasmbox" pack "$work/big.wasm" -t bench/big:v1 --oci-layout "$work/layout" >/dev/null

now() { date +%s.%N; }
declare -a t_packpush t_push t_skopeo t_pack t_base
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
  s=$(now); WASMBOX_STORE=$work/store "$wasmbox" pack "$work/big.wasm" -t "bench/pack-$i:v1" >/dev/null; e=$(now)
  t_pack+=("$(echo "$e - $s" | bc)")
  s=$(now); sha256sum "$work/big.wasm" >/dev/null; gzip -6 -c "$work/big.wasm" | sha256sum >/dev/null; e=$(now)
  t_base+=("$(echo "$e - $s" | bc)")
done

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %.3fs  median %.3fs  max %.3fs", a[1], a[int((NR+1)/2)], a[NR]}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "wasmbox pack --push : $(stats "${t_packpush[@]}")"
echo "wasmbox push        : $(stats "${t_push[@]}")"
echo "skopeo copy         : $(stats "${t_skopeo[@]}")"
echo "wasmbox pack        : $(stats "${t_pack[@]}")"
echo "sha256sum + gzip -6 : $(stats "${t_base[@]}")"
echo "ratio push / skopeo copy           : $(echo "scale=2; $(median "${t_push[@]}") / $(median "${t_skopeo[@]}")" | bc)  (goal <= 1.2)"
echo "ratio pack+push / skopeo copy      : $(echo "scale=2; $(median "${t_packpush[@]}") / $(median "${t_skopeo[@]}")" | bc)"
echo "ratio pack / (sha256sum + gzip -6) : $(echo "scale=2; $(median "${t_pack[@]}") / $(median "${t_base[@]}")" | bc)"

# Rows for benches/suite.sh's table when run from it.
if [ -n "${RESULTS:-}" ]; then
  r=$(echo "scale=2; $(median "${t_push[@]}") / $(median "${t_skopeo[@]}")" | bc | sed 's/^\./0./')
  printf 'packer\twasmbox push of a 25 MB module (s)\t%s\t%s (skopeo copy)\t%s\t≤ 1.2× skopeo\t%s\n' \
    "$(median "${t_push[@]}")" "$(median "${t_skopeo[@]}")" "$r" \
    "$([ "$(echo "$r <= 1.2" | bc)" = 1 ] && echo met || echo missed)" >>"$RESULTS"
  r=$(echo "scale=2; $(median "${t_packpush[@]}") / $(median "${t_skopeo[@]}")" | bc | sed 's/^\./0./')
  printf 'packer\twasmbox pack --push (s)\t%s\t%s (skopeo copy)\t%s\t\t\n' \
    "$(median "${t_packpush[@]}")" "$(median "${t_skopeo[@]}")" "$r" >>"$RESULTS"
fi

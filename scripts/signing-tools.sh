#!/usr/bin/env bash
# Fetches private copies of the image-signing tools (cosign, notation, oras)
# for the signing interop tests, without installing anything: Debian
# unstable's `cosign`, `notation` and `oras` packages are downloaded with a
# private apt configuration and unpacked under .cache/signing-tools/
# (scripts/lib/debian-archive.sh).
#
# Why Debian unstable's: Debian 12 packages none of the three, and
# unstable's (cosign 3.1, notation 1.3, oras 1.3 when this was written) are
# Go binaries that run on Debian 12.
# WASMBOX_SIGNING_TOOLS_SUITE picks another suite.
#
# Prints the directory whose bin/ holds cosign, notation and oras; its
# `versions` file names the package versions.
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${WASMBOX_SIGNING_TOOLS_SUITE:-sid}
TOOLS=(cosign notation oras)
root=$PWD/.cache/signing-tools
present=1
for b in "${TOOLS[@]}"; do
  [ -x "$root/bin/$b" ] || present=0
done
if [ "$present" = 1 ] && [ -f "$root/versions" ]; then
  echo "$root"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/wasmbox-signing-tools.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=lib/debian-archive.sh
. scripts/lib/debian-archive.sh
fetch_debs "$work" "$SUITE" "${TOOLS[@]}"
staging=$work/root
unpack_debs "$work" "$staging"
mkdir -p "$staging/out/bin"
for b in "${TOOLS[@]}"; do
  [ -x "$staging/usr/bin/$b" ] || { echo "error: usr/bin/$b is missing from Debian $SUITE's $b package" >&2; exit 1; }
  cp "$staging/usr/bin/$b" "$staging/out/bin/"
  # Each must run here (they are Go binaries; a newer glibc would stop them).
  "$staging/out/bin/$b" version >"$work/run.out" 2>"$work/run.err" || {
    echo "error: $b of Debian $SUITE ($(paste -sd, "$staging/versions")) does not run here: $(head -1 "$work/run.err")" >&2
    exit 1
  }
done
cp "$staging/versions" "$staging/out/versions"
rm -rf "$root"
mkdir -p "$(dirname "$root")"
mv "$staging/out" "$root"
echo "$root"

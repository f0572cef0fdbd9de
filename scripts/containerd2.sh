#!/usr/bin/env bash
# Fetches a private containerd 2.x for the tests (the shim, CRI and Docker
# suites run on it), without installing anything: Debian unstable's
# `containerd` package is downloaded with a private apt configuration and
# unpacked under .cache/containerd-2/ (scripts/lib/debian-archive.sh).
#
# Why Debian unstable's: it is the containerd 2.x a Debian user gets (2.1.9
# when this was written), and its containerd, ctr and containerd-shim-runc-v2
# are Go binaries that run on Debian 12. runc stays the machine's (unstable's
# runc needs a newer glibc). WASMBOX_CONTAINERD2_SUITE picks another suite.
#
# Prints the directory whose bin/ holds containerd, ctr and
# containerd-shim-runc-v2; its `versions` file names the package version.
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${WASMBOX_CONTAINERD2_SUITE:-sid}
root=$PWD/.cache/containerd-2
if [ -x "$root/bin/containerd" ] && [ -f "$root/versions" ]; then
  echo "$root"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/wasmbox-containerd2.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=lib/debian-archive.sh
. scripts/lib/debian-archive.sh
fetch_debs "$work" "$SUITE" containerd
staging=$work/root
unpack_debs "$work" "$staging"
mkdir -p "$staging/out/bin"
for b in containerd ctr containerd-shim-runc-v2; do
  [ -x "$staging/usr/bin/$b" ] || { echo "error: usr/bin/$b is missing from Debian $SUITE's containerd package" >&2; exit 1; }
  cp "$staging/usr/bin/$b" "$staging/out/bin/"
done
cp "$staging/versions" "$staging/out/versions"
version=$("$staging/out/bin/containerd" --version 2>"$work/run.err") || {
  echo "error: containerd of Debian $SUITE ($(paste -sd, "$staging/versions")) does not run here: $(head -1 "$work/run.err")" >&2
  exit 1
}
case "$version" in
  *" v2."* | *" 2."*) ;;
  *) echo "error: Debian $SUITE's containerd is not 2.x: $version" >&2; exit 1 ;;
esac
rm -rf "$root"
mkdir -p "$(dirname "$root")"
mv "$staging/out" "$root"
echo "$root"

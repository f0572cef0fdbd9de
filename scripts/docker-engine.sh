#!/usr/bin/env bash
# Fetches a private Docker Engine for the Docker tests and the demo, without
# installing anything into the system: the .debs are downloaded with a private
# apt configuration and unpacked (dpkg-deb -x) under .cache/docker-engine/.
#
# Why not the machine's own Docker: tests must leave it exactly as they found
# it, and its engine may predate shims by name (Engine >= 23) and the
# containerd image store (>= 24). Debian's docker.io 28 and containerd 1.7 are
# what a user of Docker Engine 28 runs; both are plain Go binaries that need
# only glibc >= 2.34, so they run on Debian 12 too.
#
# Prints the directory whose bin/ holds dockerd, docker, containerd, ctr,
# containerd-shim-runc-v2 and the compose and buildx CLI plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
# Suites: Docker Engine 28 is in Debian's unstable, containerd 1.7 in Debian 13.
DOCKER_SUITE=${WASMBOX_DOCKER_SUITE:-sid}
CONTAINERD_SUITE=${WASMBOX_CONTAINERD_SUITE:-trixie}
root=$PWD/.cache/docker-engine
if [ -x "$root/bin/dockerd" ] && [ -x "$root/bin/containerd" ] && [ -f "$root/versions" ]; then
  echo "$root"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/wasmbox-docker-engine.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=lib/debian-archive.sh
. scripts/lib/debian-archive.sh
fetch_debs "$work" "$DOCKER_SUITE" docker.io docker-cli docker-compose docker-buildx tini-static
fetch_debs "$work" "$CONTAINERD_SUITE" containerd
staging=$work/root
unpack_debs "$work" "$staging"
mkdir -p "$staging/out/bin"
for b in usr/sbin/dockerd usr/bin/docker usr/bin/containerd usr/bin/ctr usr/bin/containerd-shim-runc-v2 usr/sbin/docker-proxy; do
  [ -x "$staging/$b" ] || { echo "error: $b is missing from the downloaded packages" >&2; exit 1; }
  cp "$staging/$b" "$staging/out/bin/"
done
cp "$staging/usr/bin/tini-static" "$staging/out/bin/docker-init"
mkdir -p "$staging/out/cli-plugins"
cp "$staging"/usr/libexec/docker/cli-plugins/docker-{compose,buildx} "$staging/out/cli-plugins/"
cp "$staging/versions" "$staging/out/versions"
# A newer build could need a newer glibc than this machine's: say so plainly.
for b in dockerd containerd docker; do
  if ! "$staging/out/bin/$b" --version >/dev/null 2>"$work/run.err"; then
    echo "error: $b of the downloaded packages ($(paste -sd, "$staging/versions")) does not run here: $(head -1 "$work/run.err"); try WASMBOX_DOCKER_SUITE=trixie (Docker 26)" >&2
    exit 1
  fi
done
rm -rf "$root"
mkdir -p "$(dirname "$root")"
mv "$staging/out" "$root"
echo "$root"

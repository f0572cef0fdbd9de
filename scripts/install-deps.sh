#!/usr/bin/env bash
# Installs the Debian packages in scripts/debian-packages.txt that are missing.
# Safe to run again: it does nothing when everything is there.
#
# A line may name a binary after the package (`containerd containerd`): the
# package is then skipped when that binary is already on PATH, whoever
# installed it. Debian's containerd and runc conflict with Docker's
# containerd.io, and apt would remove Docker Engine to install them; on a
# machine with Docker, its containerd and runc serve the tests as well.
#
# `--print` only prints the packages it would install, one per line;
# `--bench` also installs scripts/bench-packages.txt (what `make bench` needs).
set -euo pipefail
cd "$(dirname "$0")/.."
lists=(scripts/debian-packages.txt)
if [ "${1:-}" = "--bench" ]; then
  lists+=(scripts/bench-packages.txt)
  shift
fi
missing=()
while read -r pkg binary _; do
  case "$pkg" in "" | \#*) continue ;; esac
  if [ -n "${binary:-}" ] && command -v "$binary" >/dev/null 2>&1; then
    continue
  fi
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < <(cat "${lists[@]}")
if [ "${1:-}" = "--print" ]; then
  [ ${#missing[@]} -eq 0 ] || printf '%s\n' "${missing[@]}"
  exit 0
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "Installing missing Debian packages: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: need root or sudo to apt-get install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

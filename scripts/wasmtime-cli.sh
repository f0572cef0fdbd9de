#!/usr/bin/env bash
# Builds wasmtime's own CLI, 48.0.x from crates.io, once, into
# .cache/peers/wasmtime-48 (its own target dir there, kept for rebuilds) and
# prints the path of its `wasmtime` binary: `make bench` measures
# `wasmtime serve` beside the shim with it. Only the features `serve` needs
# (it builds on `run`, and 48.0.8 does not build without `component-model-async`).
# About 10 minutes the first time on 2 cores; nothing afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/.cache/peers/wasmtime-48
binary=$root/bin/wasmtime
if [ ! -x "$binary" ]; then
  echo "building wasmtime-cli 48 (once) into $root" >&2
  CARGO_TARGET_DIR=$root/target cargo install --quiet --locked wasmtime-cli --version '~48.0' \
    --no-default-features --features run,serve,component-model-async,cranelift,pooling-allocator,parallel-compilation \
    --root "$root" >&2
fi
"$binary" --version >/dev/null
echo "$binary"

#!/usr/bin/env bash
# One-time set-up for a fresh machine: the Rust targets the filters build for, and the system
# packages the tests use. Safe to run again.
set -euo pipefail

rustup target add wasm32-wasip1 >/dev/null

need_apt=()
for tool in curl; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: ${need_apt[*]}" >&2
  fi
fi
# The stock filters, for the demo's filter chain (tests build their own copies).
cargo build --release --quiet --target wasm32-wasip1 -p wasmesh-filter-headers
echo "setup: ok"

#!/usr/bin/env bash
# One-time set-up for a fresh machine: the Rust targets the filters build for, and the system
# packages the tests use. Safe to run again.
set -euo pipefail

rustup target add wasm32-wasip1 >/dev/null

need_apt=()
# docker-registry (CNCF distribution) and skopeo: the registry interop tests' third parties
# (each command is named like its Debian package); python3 with pip for oras-py below.
for tool in curl docker-registry skopeo; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
if ! command -v python3 >/dev/null 2>&1; then
  need_apt+=(python3 python3-pip)
elif ! python3 -m pip --version >/dev/null 2>&1; then
  need_apt+=(python3-pip)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    # The package enables a system registry on :5000 where systemd runs; the tests start
    # their own, and the demo's embedded registry wants that port.
    if [[ " ${need_apt[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
  else
    echo "setup: please install: ${need_apt[*]}" >&2
  fi
fi
# oras-py, the registry interop tests' Python OCI client.
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import oras.provider' >/dev/null 2>&1; then
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install --quiet 'oras==0.2.43' 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages 'oras==0.2.43'
  else
    echo "setup: please install pip, then: python3 -m pip install oras==0.2.43" >&2
  fi
fi
# The SDK's other languages (sdk/README.md). AssemblyScript: the compiler pinned in
# sdk/assemblyscript/package-lock.json, installed with the machine's Node.js (>= 20).
if command -v npm >/dev/null 2>&1; then
  if [ ! -d sdk/assemblyscript/node_modules/assemblyscript ]; then
    (cd sdk/assemblyscript && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
else
  echo "setup: please install Node.js (>= 20) with npm, for the AssemblyScript SDK" >&2
fi
# C and Zig: Zig's toolchain (clang + wasi-libc, and the Zig compiler) from PyPI.
zig_version=0.15.2
if command -v python3 >/dev/null 2>&1 \
  && [ "$(python3 -m ziglang version 2>/dev/null)" != "$zig_version" ]; then
  python3 -m pip install --quiet "ziglang==$zig_version" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "ziglang==$zig_version"
fi
# The stock filters, published to the demo's embedded registry (tests build their own copies).
packages=()
for manifest in filters/*/Cargo.toml; do
  packages+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n 1)")
done
cargo build --release --quiet --target wasm32-wasip1 "${packages[@]}"
echo "setup: ok"

#!/usr/bin/env sh
# Builds the filter with Zig's C toolchain (clang + wasi-libc) as a WASI reactor:
#   ./build.sh [OUTPUT]        (default: build/filter.wasm)
# Zig: $ZIG if set, else `zig` on PATH, else the PyPI package (`pip install ziglang==0.15.2`).
set -eu
cd "$(dirname "$0")"
out=${1:-build/filter.wasm}
mkdir -p "$(dirname "$out")"

if [ -n "${ZIG:-}" ]; then
  zig="$ZIG"
elif command -v zig >/dev/null 2>&1; then
  zig=zig
elif python3 -c 'import ziglang' >/dev/null 2>&1; then
  zig="python3 -m ziglang"
else
  echo "build.sh: zig not found: install it with \`python3 -m pip install ziglang==0.15.2\` (or set ZIG)" >&2
  exit 127
fi

$zig cc -target wasm32-wasi -mexec-model=reactor -Os -s -Wall -Wextra -Werror \
  -o "$out" filter.c proxy_wasm_helpers.c
echo "built $out"

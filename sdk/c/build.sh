#!/usr/bin/env sh
# Builds the C and Zig example filters with Zig's toolchain (clang and wasi-libc for C,
# the Zig compiler for Zig) into OUT_DIR (default: build/): filter_c.wasm, filter_zig.wasm.
# Zig: $ZIG if set, else `zig` on PATH, else the PyPI package (`pip install ziglang==0.15.2`).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/build"}
mkdir -p "$out"

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

# C: a WASI reactor (exports _initialize), optimised for size, symbols stripped.
$zig cc -target wasm32-wasi -mexec-model=reactor -Os -s -Wall -Wextra -Werror \
  -I "$here" -o "$out/filter_c.wasm" "$here/examples/filter.c" "$here/proxy_wasm_helpers.c"

# Zig: -rdynamic exports the `export fn` callbacks; -fno-entry: a reactor has no main.
$zig build-exe "$here/examples/filter.zig" "$here/proxy_wasm_helpers.c" -target wasm32-wasi \
  -mexec-model=reactor -fno-entry -rdynamic -fstrip -O ReleaseSmall -lc -I "$here" \
  --cache-dir "$out/.zig-cache" -femit-bin="$out/filter_zig.wasm"

echo "built $out/filter_c.wasm $out/filter_zig.wasm"

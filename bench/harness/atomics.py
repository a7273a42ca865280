"""Counts the atomic read-modify-write instructions a profiled process executed per request:
every `lock`-prefixed instruction and every `xchg` with a memory operand (implicitly locked).
Used by bench/profile:

    python3 -m harness.atomics FILE REQUESTS [--top N]

FILE is a callgrind output made with `--dump-instr=yes`, so that costs are kept per instruction
address. An instruction's Ir is its execution count; the addresses are matched against
`objdump -d` of each object the process ran code from (callgrind writes them as the object
file's own addresses, for the executable and for shared libraries alike). Callgrind does not
model what an atomic costs, so instruction counts alone hide them: on this machine each one
costs several times a plain instruction (bench/PROFILE.md measures how much).
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections import defaultdict

_NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")
_ATOMIC = re.compile(r"^\s*([0-9a-f]+):\s+(?:lock\s|xchg\S*\s+\S*\()")
# The crate a function belongs to: the first path segment, looking through `<T as Trait>`,
# `&`, `drop_in_place<...>` and `Option<...>` wrappers.
_CRATE = re.compile(r"^(?:core::ptr::drop_in_place<)?[<&(\s]*(?:core::option::Option<)?"
                    r"[<&(\s]*(?:dyn |mut )?([A-Za-z_][A-Za-z0-9_]*)::")


def executions(path: str) -> dict[tuple[str, str], dict[int, int]]:
    """(object, function) -> {instruction address: executions} from a `--dump-instr=yes` file."""
    out: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    names: dict[str, str] = {}
    objects: dict[str, str] = {}
    obj = fn = ""
    address = 0
    positions = 1
    skip_next = False  # the line after `calls=` carries the call's inclusive cost

    def resolve(value: str, table: dict[str, str]) -> str:
        m = _NAME.match(value.strip())
        if not m:
            return value.strip()
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), f"({m.group(1)})")

    with open(path, errors="replace") as f:
        for line in f:
            c = line[:1]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                p = parts[0]
                if p.startswith("0x"):
                    address = int(p, 16)
                elif p[0] in "+-":
                    address += int(p)
                # "*": the same address as the line before
                if skip_next:
                    skip_next = False
                elif len(parts) > positions:
                    out[(obj, fn)][address] += int(parts[positions])
                continue
            key, _, value = line.rstrip("\n").partition("=")
            if key == "ob":
                obj = resolve(value, objects)
            elif key == "fn":
                fn = resolve(value, names)
            elif key in ("cob", "cfn"):
                resolve(value, objects if key == "cob" else names)
            elif key == "calls":
                skip_next = True
            elif line.startswith("positions:"):
                kinds = line.split(":", 1)[1].split()
                if "instr" not in kinds:
                    raise SystemExit(f"{path}: made without --dump-instr=yes")
                positions = len(kinds)
    return out


def atomic_addresses(obj: str) -> set[int]:
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj],
                          capture_output=True, text=True, check=False).stdout
    return {int(m.group(1), 16) for m in map(_ATOMIC.match, text.splitlines()) if m}


def crate(function: str) -> str:
    m = _CRATE.match(function)
    return m.group(1) if m else function[:40]


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("file")
    a.add_argument("requests", type=int)
    a.add_argument("--top", type=int, default=15)
    args = a.parse_args()
    n = args.requests
    runs = executions(args.file)
    by_object: dict[str, int] = defaultdict(int)
    by_crate: dict[str, int] = defaultdict(int)
    by_function: dict[str, int] = defaultdict(int)
    atomic: dict[str, set[int]] = {}
    for (obj, fn), counts in runs.items():
        if not obj.startswith("/"):
            continue  # JIT code (Wasm guests) has no object file to read
        if obj not in atomic:
            atomic[obj] = atomic_addresses(obj)
        hits = sum(c for addr, c in counts.items() if addr in atomic[obj])
        if hits:
            by_object[obj] += hits
            by_crate[crate(fn)] += hits
            by_function[fn] += hits
    total = sum(by_object.values())
    print(f"atomic read-modify-writes per request: {total / n:,.1f}")
    for obj, hits in sorted(by_object.items(), key=lambda kv: -kv[1]):
        print(f"{hits / n:8.1f}  {obj}")
    print("\nby crate of the function they execute in (inlined code counts as its caller's):")
    for name, hits in sorted(by_crate.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{hits / n:8.1f}  {name}")
    print(f"\ntop {args.top} functions:")
    for name, hits in sorted(by_function.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{hits / n:8.1f}  {name[:150]}")


if __name__ == "__main__":
    main()

"""Reads a callgrind output file: instructions per request, the top functions by inclusive
cost, and where a Wasm filter's cost goes. Used by bench/profile:

    python3 -m harness.callgrind FILE REQUESTS [--top N] [--filters] [--callers REGEX]

Function names are merged across the source files callgrind splits inlined code into. JIT code
(the Wasm guest, compiled by wasmtime's Cranelift) has no symbols: it shows as bare addresses
in an unknown object, and is summed as "guest code".
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from dataclasses import dataclass, field

_NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")


@dataclass
class Profile:
    total: int = 0
    self_cost: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # Cost of calls made from a function, by caller (to other functions).
    call_cost: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # (caller, callee) -> [calls, inclusive cost]
    edges: dict[tuple[str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0]))
    jit: set[str] = field(default_factory=set)
    # Every event's whole-run total (Ir, and with --cache-sim/--branch-sim the simulated cache
    # misses and mispredicted branches), from the file's summary line.
    events: dict[str, int] = field(default_factory=dict)

    def inclusive(self, name: str) -> int:
        return self.self_cost.get(name, 0) + self.call_cost.get(name, 0)


def parse(path: str) -> Profile:
    p = Profile()
    names: dict[str, str] = {}
    objects: dict[str, str] = {}
    current = None
    current_object = ""
    call_next = False
    callee = None
    calls = 0
    event_names: list[str] = []
    positions = 1  # position columns before the costs (2 with --dump-instr=yes)

    def resolve(value: str, table: dict[str, str]) -> str:
        m = _NAME.match(value.strip())
        if not m:
            return value.strip()
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), f"({m.group(1)})")

    with open(path, errors="replace") as f:
        for line in f:
            if not line or line[0] == "#":
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if current is None:
                    continue
                parts = line.split()
                cost = int(parts[positions]) if len(parts) > positions else 0
                if call_next:
                    call_next = False
                    edge = p.edges[(current, callee)]
                    edge[0] += calls
                    edge[1] += cost
                    if callee != current:  # recursion is already in the caller's cost
                        p.call_cost[current] += cost
                else:
                    p.self_cost[current] += cost
                    p.total += cost
                continue
            if line.startswith("positions:"):
                positions = len(line.split(":", 1)[1].split())
                continue
            if line.startswith(("events:", "summary:", "totals:")):
                key, _, value = line.partition(":")
                if key == "events":
                    event_names = value.split()
                else:
                    p.events = dict(zip(event_names, map(int, value.split())))
                continue
            key, _, value = line.partition("=")
            if key == "ob":
                current_object = resolve(value, objects)
            elif key == "fn":
                current = resolve(value, names)
                if current_object in ("???", "") and current.startswith("0x"):
                    p.jit.add(current)
            elif key == "cfn":
                callee = resolve(value, names)
            elif key == "cob":
                resolve(value, objects)
            elif key == "calls":
                call_next = True
                calls = int(value.split()[0])
    return p


# Where a filter's per-request cost goes, by function-name pattern (inclusive costs; the
# groups overlap where one calls the other, and the breakdown below subtracts accordingly).
def breakdown(p: Profile) -> list[tuple[str, int]]:
    def incl(pattern: str) -> int:
        rx = re.compile(pattern)
        # Outermost matching functions only would need the call graph; these patterns pick
        # functions that do not call each other.
        return sum(p.inclusive(n) for n in set(p.self_cost) | set(p.call_cost) if rx.search(n))

    guest = sum(p.self_cost.get(n, 0) for n in p.jit)
    host_calls = incl(r"HostFunc::array_call_trampoline$")
    wasm_calls = incl(r"wasmtime::runtime::func::invoke_wasm_and_catch_traps$")
    return [
        ("calls into Wasm (invoke_wasm_and_catch_traps), inclusive", wasm_calls),
        ("  guest code (Cranelift-compiled filter, self)", guest),
        ("  host calls from the guest (array_call_trampoline, inclusive)", host_calls),
        ("  entry/exit, trap handling, trampolines (the rest)",
         wasm_calls - guest - host_calls),
        ("header maps to and from proxy-wasm pairs (proxy filter::pairs)",
         incl(r"wasmesh_proxy::filter::pairs::(request_pairs|response_pairs|apply_pairs)$")),
        ("response body through the chain (proxy filter::body)",
         incl(r"wasmesh_proxy::filter::body::BodyFilter as http_body::Body>::poll_frame$")),
        ("stream set-up and tear-down (HttpStream drop, finish_stream)",
         incl(r"(wasmesh_host::plugin::Plugin::finish_stream|"
              r"<wasmesh_host::stream::HttpStream as core::ops::drop::Drop>::drop)$")),
        ("SipHash (std HashMap) anywhere", incl(r"<core::hash::sip::Hasher<S> as "
                                                 r"core::hash::Hasher>::write$")),
        ("memcpy anywhere", incl(r"__memcpy_avx_unaligned_erms$")),
        ("malloc/free anywhere (mimalloc)", incl(r"^__rustc::__rust_(alloc|dealloc|realloc)$")),
    ]


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("file")
    a.add_argument("requests", type=int)
    a.add_argument("--top", type=int, default=25)
    a.add_argument("--filters", action="store_true", help="print the Wasm filter breakdown")
    a.add_argument("--callers", metavar="REGEX", help="who calls the matching functions")
    args = a.parse_args()
    p = parse(args.file)
    n = args.requests
    print(f"instructions per request: {p.total / n:,.0f}  ({p.total:,} over {n:,} requests)")
    if "I1mr" in p.events:
        e = {k: v / n for k, v in p.events.items()}
        print(f"simulated per request: L1i misses {e['I1mr']:,.0f}, L1d misses "
              f"{e['D1mr'] + e['D1mw']:,.0f}"
              + (f", mispredicted branches {e['Bcm'] + e['Bim']:,.0f}" if "Bcm" in e else ""))
    print(f"\ntop {args.top} functions by inclusive instructions per request "
          "(scheduler and connection frames left out):")
    skip = re.compile(r"^(clone|start_thread|0x|std::|core::ops::function|tokio::runtime::"
                      r"(scheduler|task|runtime|context)|<std::sys|std::thread::local|"
                      r"\(below main\)|main$|__libc_start_main)")
    ranked = sorted(((p.inclusive(k), k) for k in set(p.self_cost) | set(p.call_cost)
                     if not skip.search(k)), reverse=True)
    for cost, name in ranked[: args.top]:
        print(f"{cost / n:10,.0f}  {cost / p.total:6.1%}  {name[:150]}")
    print(f"\ntop {args.top} functions by self instructions per request:")
    for cost, name in sorted(((v, k) for k, v in p.self_cost.items()), reverse=True)[: args.top]:
        label = "guest code at " + name if name in p.jit else name
        print(f"{cost / n:10,.0f}  {cost / p.total:6.1%}  {label[:150]}")
    if args.callers:
        rx = re.compile(args.callers)
        print(f"\ncallers of /{args.callers}/ (calls and inclusive instructions per request):")
        rows = sorted(((cost, calls, caller, callee)
                       for (caller, callee), (calls, cost) in p.edges.items()
                       if rx.search(callee) and caller != callee), reverse=True)
        for cost, calls, caller, callee in rows[: args.top]:
            print(f"{cost / n:10,.0f}  {calls / n:6.2f}×  {caller[:90]} -> {callee[:60]}")
    if args.filters:
        print("\nwhere the Wasm filter work goes (inclusive instructions per request):")
        for label, cost in breakdown(p):
            print(f"{cost / n:10,.0f}  {label}")


if __name__ == "__main__":
    main()

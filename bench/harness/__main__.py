"""Runs the suite: `python3 -m harness` from bench/ (bench/run does it, after installing the
peers and building wasmesh and the filters)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import configs, load, procstat, report
from .pki import SERVER_NAME, make_jwt, make_pki
from .plan import (FULL, SMOKE, STOCK_CHAIN, Plugin, Scenario, Timing, estimate_seconds,
                   scenarios, stock_chain_configs)
from .processes import Service, free_ports, wait_port

PROXY_CPU = "0"  # the proxy under test and the upstream
LOAD_CPU = "1"  # the load generator, and this harness
BODY_BYTES = 1024
PATH = "/bench"


def main() -> int:
    args = parse_args()
    # SIGTERM (a CI time limit, say) unwinds like Ctrl-C, so every started process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    if os.cpu_count() and os.cpu_count() >= 2:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    timing = SMOKE if args.smoke else FULL
    if args.rounds is not None:
        timing = dataclasses.replace(timing, rounds=args.rounds, rate_rounds=args.rounds)
    if args.duration is not None:
        timing = dataclasses.replace(timing, duration_s=args.duration,
                                     rate_duration_s=args.duration)
    partial = args.smoke or args.only or args.targets or args.rounds or args.duration
    out_dir = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="wasmesh-bench-out-")) if partial else Path(args.bench_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="wasmesh-bench-"))

    pki = make_pki(work / "pki")
    jwks, token = make_jwt(work / "pki")
    chain, chain_notes = stock_chain(Path(args.filters_wasm_dir), Path(args.repo), jwks)
    plan = scenarios(Path(args.headers_wasm), Path(args.body_wasm), chain, chain_notes, token)
    if args.wasmesh_pgo:
        for s in plan:
            if "wasmesh" in s.targets:
                at = s.targets.index("wasmesh") + 1
                s.targets = (*s.targets[:at], "wasmesh-pgo", *s.targets[at:])
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {s.name for s in plan}
        if unknown:
            print(f"bench: no scenario {', '.join(sorted(unknown))} "
                  f"(there are: {', '.join(s.name for s in plan)})", file=sys.stderr)
            return 2
        plan = [s for s in plan if s.name in wanted]
    if args.targets:
        keep = set(args.targets.split(","))
        if args.wasmesh_pgo and "wasmesh" in keep:
            keep.add("wasmesh-pgo")  # --pgo asks for it beside wasmesh
        for s in plan:
            s.targets = tuple(t for t in s.targets if t in keep)
        plan = [s for s in plan if s.targets]
    if not chain and any(s.name == "stock-chain" for s in plan):
        print("bench: no stock filter is built: no stock-chain scenario", file=sys.stderr)
        plan = [s for s in plan if s.name != "stock-chain"]

    print(f"bench: {len(plan)} scenario(s), {sum(len(s.targets) for s in plan)} cells, "
          f"about {estimate_seconds(plan, timing) / 60:.1f} min of measuring; "
          f"work dir {work}", flush=True)
    meta = describe(args, timing)

    upstreams: list[Service] = []
    results = {"meta": meta, "scenarios": []}
    failures = 0
    try:
        plain_port, tls_port = free_ports(2)
        plain = Service("upstream", [args.wasmesh, "upstream", "--listen",
                                     f"127.0.0.1:{plain_port}", "--body-bytes", str(BODY_BYTES)],
                        PROXY_CPU, {"TOKIO_WORKER_THREADS": "1"}, work / "upstream.log")
        upstreams.append(plain)
        secure = Service("tls upstream",
                         [args.wasmesh, "upstream", "--listen", f"127.0.0.1:{tls_port}",
                          "--body-bytes", str(BODY_BYTES), "--tls-cert", str(pki.upstream_cert),
                          "--tls-key", str(pki.upstream_key), "--client-ca", str(pki.ca)],
                        PROXY_CPU, {"TOKIO_WORKER_THREADS": "1"}, work / "tls-upstream.log")
        upstreams.append(secure)
        wait_port(plain, plain_port)
        wait_port(secure, tls_port)
        reference = fetch(f"http://127.0.0.1:{plain_port}{PATH}", [])
        if reference.status != 200 or len(reference.body) != BODY_BYTES:
            raise RuntimeError(f"the upstream answered {reference.status} with "
                               f"{len(reference.body)} bytes, not 200 with {BODY_BYTES}")
        ctx = Context(args, timing, pki, work, plain, plain_port, tls_port, reference.body)
        for s in plan:
            print(f"\n== {s.name}: {s.title} ({', '.join(s.targets)})", flush=True)
            began = time.monotonic()
            outcome = run_scenario(ctx, s)
            print(f"   ({time.monotonic() - began:.0f} s)", flush=True)
            failures += sum(1 for c in outcome["targets"].values() if not c.get("ok"))
            results["scenarios"].append(outcome)
    finally:
        for u in upstreams:
            u.stop()

    meta["elapsed_s"] = time.monotonic() - started
    cells = sum(len(s["targets"]) for s in results["scenarios"])
    chart_note = report.chart(results, out_dir / "results.png")
    results["chart"] = None if chart_note else "results.png"
    if chart_note:
        print(f"bench: {chart_note}", file=sys.stderr)
    (out_dir / "results.json").write_text(json.dumps(strip_samples(results), indent=1))
    (out_dir / "RESULTS.md").write_text(report.markdown(results))
    print(f"\nbench: wrote {out_dir / 'RESULTS.md'}"
          + ("" if chart_note else f" and {out_dir / 'results.png'}"))
    print_summary(results)
    if args.keep:
        print(f"bench: kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"bench: {cells - failures} passed, {failures} failed")
    return 1 if failures else 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long, tiny load, every scenario once (CI)")
    p.add_argument("--only", help="comma-separated scenarios")
    p.add_argument("--targets", help="comma-separated targets (direct, wasmesh, envoy, ...)")
    p.add_argument("--rounds", type=int, help="rounds per measurement")
    p.add_argument("--duration", type=float, help="seconds per round")
    p.add_argument("--out", help="where RESULTS.md, results.png and results.json go "
                   "(default: bench/ for a full run, a temporary directory otherwise)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    p.add_argument("--repo", required=True)
    p.add_argument("--bench-dir", required=True)
    p.add_argument("--wasmesh", required=True)
    p.add_argument("--wasmesh-profile", required=True)
    p.add_argument("--wasmesh-pgo", help="a profile-guided wasmesh (bench/pgo), measured "
                   "beside the other as target wasmesh-pgo")
    p.add_argument("--envoy", required=True)
    p.add_argument("--headers-wasm", required=True)
    p.add_argument("--body-wasm", required=True)
    p.add_argument("--filters-wasm-dir", required=True)
    p.add_argument("--command", default="bench/run")
    return p.parse_args()


def stock_chain(wasm_dir: Path, repo: Path, jwks: dict) -> tuple[list[Plugin], list[str]]:
    configs_by_name = stock_chain_configs(jwks)
    chain, notes = [], []
    for name in STOCK_CHAIN:
        wasm = wasm_dir / f"wasmesh_filter_{name.replace('-', '_')}.wasm"
        if not (repo / "filters" / name / "Cargo.toml").is_file():
            notes.append(f"`{name}` is not in filters/ yet: left out of the chain")
            continue
        if not wasm.is_file():
            notes.append(f"`{name}` was not built ({wasm.name} missing): left out of the chain")
            continue
        config, vm_id, expect = configs_by_name[name]
        chain.append(Plugin(name, wasm, config, vm_id, expect))
    return chain, notes


@dataclasses.dataclass
class Context:
    args: argparse.Namespace
    timing: Timing
    pki: object
    work: Path
    upstream: Service
    plain_port: int
    tls_port: int
    reference_body: bytes


@dataclasses.dataclass
class Target:
    name: str
    url: str
    service: Service | None  # None: "direct", the upstream itself

    def pids(self, ctx: Context) -> list[int]:
        return (self.service or ctx.upstream).pids()


def start_target(ctx: Context, s: Scenario, name: str) -> Target:
    scheme = "https" if s.downstream == "tls" else "http"
    if name == "direct":
        return Target(name, f"http://127.0.0.1:{ctx.plain_port}{PATH}", None)
    (port,) = free_ports(1)
    upstream_port = ctx.tls_port if s.upstream == "mtls" else ctx.plain_port
    # Each target's configuration in a directory of its own: wasmesh watches its config file's
    # directory, and the load generators' logs in the work directory would wake it per request.
    w = ctx.work / f"{name}-{s.name}"
    w.mkdir(exist_ok=True)
    if name in ("wasmesh", "wasmesh-pgo"):
        bin = ctx.args.wasmesh if name == "wasmesh" else ctx.args.wasmesh_pgo
        launch = configs.wasmesh(Path(bin), s, port, upstream_port, ctx.pki, w)
    elif name == "envoy":
        launch = configs.envoy(Path(ctx.args.envoy), s, port, upstream_port, ctx.pki, w)
    elif name == "nginx":
        launch = configs.nginx(s, port, upstream_port, ctx.pki, w)
    elif name == "haproxy":
        launch = configs.haproxy(s, port, upstream_port, ctx.pki, w)
    else:
        raise ValueError(f"unknown target {name}")
    service = Service(name, launch.argv, PROXY_CPU, launch.env, ctx.work / f"{name}-{s.name}.log")
    try:
        # A debug wasmesh compiling a large filter chain takes a while.
        wait_port(service, port, timeout_s=180)
    except RuntimeError:
        service.stop()
        raise
    return Target(name, f"{scheme}://127.0.0.1:{port}{PATH}", service)


@dataclasses.dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(url: str, extra: list[str], h2c: bool = False, cafile: str | None = None) -> Fetched:
    """One request with curl (HTTP/1.1 unless h2c), to check what a target answers."""
    argv = ["curl", "-sS", "--max-time", "10", "-D", "-", "-o", "-", "--http1.1"]
    if h2c:
        argv[-1] = "--http2-prior-knowledge"
    if cafile:
        argv += ["--cacert", cafile]
    for h in extra:
        argv += ["-H", h]
    out = subprocess.run(argv + [url], capture_output=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(f"curl {url}: {out.stderr.decode(errors='replace').strip()}")
    raw = out.stdout
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Fetched(status, headers, body)


def check(ctx: Context, s: Scenario, t: Target, cell: dict) -> None:
    """The target answers as the scenario says, before any load: 200, the upstream's body
    (upper-cased when rewritten), and every filter's response header."""
    got = fetch(t.url, list(s.headers), h2c=s.downstream == "h2c",
                cafile=str(ctx.pki.ca) if s.downstream == "tls" else None)
    want = ctx.reference_body.upper() if s.body_rewrite else ctx.reference_body
    problems = []
    if got.status != 200:
        problems.append(f"status {got.status}")
    if got.body != want:
        problems.append(f"body of {len(got.body)} bytes is not the expected {len(want)} "
                        f"({got.body[:60]!r}…)")
    for p in s.plugins:
        for h in p.expect_headers:
            if h not in got.headers:
                problems.append(f"no {h} header from filter {p.name}")
    if problems:
        raise RuntimeError(f"{t.name} answers wrongly: " + "; ".join(problems))
    if s.downstream == "tls":
        cell["tls"] = load.negotiated(t.url, ctx.pki.client_openssl_conf, LOAD_CPU)
        if load.TLS13_CIPHER not in cell["tls"]:
            raise RuntimeError(f"{t.name} negotiated {cell['tls']}, not {load.TLS13_CIPHER}")


def run_load(ctx: Context, s: Scenario, t: Target, seconds: float, rate: int | None,
             record: bool) -> dict | None:
    tm = ctx.timing
    tls_conf = ctx.pki.client_openssl_conf if s.downstream == "tls" else None
    pids = t.pids(ctx)
    marks: dict = {}

    def at_start() -> None:
        marks["cpu"] = procstat.cpu(pids)
        marks["util"] = procstat.cpu_busy()

    if rate is None and s.downstream != "h2c":
        run = load.wrk(t.url, tm.conns, seconds, s.headers, LOAD_CPU, tls_conf, at_start)
    elif rate is None:
        run = load.h2load(t.url, h1=False, conns=tm.h2_conns, streams=tm.h2_streams,
                          seconds=seconds, warmup_s=0.2, rate=None, headers=s.headers,
                          cpu=LOAD_CPU, tls_conf=tls_conf, log=ctx.work / "h2load.log",
                          at_start=at_start)
    else:
        run = load.h2load(t.url, h1=s.downstream != "h2c", conns=tm.rate_conns,
                          streams=1 if s.downstream != "h2c" else 8, seconds=seconds,
                          warmup_s=tm.rate_warmup_s, rate=rate, headers=s.headers,
                          cpu=LOAD_CPU, tls_conf=tls_conf, log=ctx.work / "h2load.log",
                          at_start=at_start)
    if not record:
        return None
    used = procstat.cpu(pids) - marks["cpu"]
    util = procstat.utilisation(marks["util"], procstat.cpu_busy())
    return {
        "requests": run.requests, "seconds": run.seconds, "rps": run.rps, "errors": run.errors,
        "p50_us": run.p50_us, "p90_us": run.p90_us, "p99_us": run.p99_us,
        "p999_us": run.p999_us, "cpu_s": used.seconds(), "cpu_ticks_s": used.ticks_s,
        "cpu_agrees": used.agrees(), "util": util[:2], "latencies_us": run.latencies_us,
    }


def rotate(items: list, n: int) -> list:
    n %= max(1, len(items))
    return items[n:] + items[:n]


def run_scenario(ctx: Context, s: Scenario) -> dict:
    tm = ctx.timing
    cells: dict[str, dict] = {t: {"ok": False, "flags": []} for t in s.targets}
    outcome = {"name": s.name, "title": s.title, "what": s.what, "downstream": s.downstream,
               "upstream": s.upstream, "notes": s.notes, "targets": cells}
    for note in s.notes:
        print(f"   note: {note}")
    live: list[Target] = []
    try:
        for name in s.targets:
            try:
                t = start_target(ctx, s, name)
                live.append(t)
                check(ctx, s, t, cells[name])
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                cells[name]["error"] = one_line(e)
                print(f"   {name}: FAILED: {e}", flush=True)
                if live and live[-1].name == name:
                    failed = live.pop()
                    if failed.service:
                        failed.service.stop()
        for t in live:
            run_load(ctx, s, t, tm.warmup_s, None, record=False)
        sat: dict[str, list[dict]] = {t.name: [] for t in live}
        for r in range(tm.rounds):
            for t in rotate(live, r):
                m = guarded(ctx, s, t, tm.duration_s, None, cells)
                if m:
                    sat[t.name].append(m)
                    print(f"   {t.name:8} saturating round {r + 1}: {m['rps']:9,.0f} req/s  "
                          f"p99 {m['p99_us']:7,.0f} µs  CPU {cpu_per_10k(m):.3f} s/10k  "
                          f"errors {m['errors']}", flush=True)
        rated: dict[str, dict[int, list[dict]]] = {t.name: {} for t in live}
        for rate in tm.rates:
            for r in range(tm.rate_rounds):
                for t in rotate(live, r):
                    m = guarded(ctx, s, t, tm.rate_duration_s, rate, cells)
                    if m:
                        rated[t.name].setdefault(rate, []).append(m)
                        print(f"   {t.name:8} {rate:,} req/s round {r + 1}: achieved "
                              f"{m['rps']:7,.0f}  p50 {m['p50_us']:6,.0f}  p99 "
                              f"{m['p99_us']:7,.0f}  p99.9 {m['p999_us']:7,.0f} µs  "
                              f"CPU {cpu_per_10k(m):.3f} s/10k  errors {m['errors']}",
                              flush=True)
        for t in live:
            cell = cells[t.name]
            cell["peak_rss_mib"] = procstat.peak_rss_mib(t.pids(ctx))
            cell["rss_mib"] = procstat.rss_mib(t.pids(ctx))
            if sat[t.name]:
                cell["saturating"] = {"rounds": sat[t.name],
                                      "summary": summarize_saturating(sat[t.name])}
            cell["rates"] = {
                str(rate): {"rounds": rounds, "summary": summarize_rate(rounds, rate)}
                for rate, rounds in rated[t.name].items()
            }
            judge(cell, tm)
    finally:
        for t in live:
            if t.service:
                t.service.stop()
    return outcome


def guarded(ctx: Context, s: Scenario, t: Target, seconds: float, rate: int | None,
            cells: dict) -> dict | None:
    try:
        return run_load(ctx, s, t, seconds, rate, record=True)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        cells[t.name].setdefault("error", one_line(e))
        print(f"   {t.name}: load run failed: {e}", flush=True)
        return None


def one_line(e: Exception) -> str:
    """An error for a table cell: its first line and the last line that says what went wrong
    (a process's output follows the first line)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    cause = next((ln for ln in reversed(lines[1:])
                  if any(w in ln.lower() for w in ("alert", "error", "emerg", "fail"))),
                 lines[-1] if len(lines) > 1 else "")
    text = lines[0] + (" " + cause if cause and cause != lines[0] else "")
    return text[:400]


def cpu_per_10k(m: dict) -> float:
    return m["cpu_s"] / m["requests"] * 10_000 if m["requests"] else float("nan")


def summarize_saturating(rounds: list[dict]) -> dict:
    """The median round by req/s (its latencies); CPU per request is the median over rounds."""
    ordered = sorted(rounds, key=lambda m: m["rps"])
    mid = ordered[(len(ordered) - 1) // 2]
    return {
        "rps": statistics.median(m["rps"] for m in rounds),
        "p50_us": mid["p50_us"], "p90_us": mid["p90_us"], "p99_us": mid["p99_us"],
        "p999_us": mid["p999_us"],
        "cpu_per_10k": statistics.median(cpu_per_10k(m) for m in rounds),
        "errors": sum(m["errors"] for m in rounds),
        "util": [statistics.median(m["util"][i] for m in rounds)
                 for i in range(len(mid["util"]))],
    }


def summarize_rate(rounds: list[dict], rate: int) -> dict:
    """Percentiles over every request of every round; CPU over all rounds together."""
    latencies = sorted(x for m in rounds for x in m["latencies_us"])
    requests = sum(m["requests"] for m in rounds)
    seconds = sum(m["seconds"] for m in rounds)
    return {
        "rate": rate, "rps": requests / seconds if seconds else 0.0,
        "p50_us": load.percentile(latencies, 50), "p90_us": load.percentile(latencies, 90),
        "p99_us": load.percentile(latencies, 99), "p999_us": load.percentile(latencies, 99.9),
        "samples": len(latencies),
        "cpu_per_10k": (sum(m["cpu_s"] for m in rounds) / requests * 10_000
                        if requests else float("nan")),
        "errors": sum(m["errors"] for m in rounds),
    }


def judge(cell: dict, tm: Timing) -> None:
    """A cell is ok when it was measured and nothing failed; odd conditions become flags."""
    sat = (cell.get("saturating") or {}).get("summary")
    errors = (sat or {}).get("errors", 0) + sum(
        r["summary"]["errors"] for r in cell.get("rates", {}).values())
    if errors:
        cell["flags"].append(f"**{errors} failed requests** (errors or non-2xx answers)")
    if sat and len(sat["util"]) >= 2 and not cell.get("error"):
        cpu0, cpu1 = sat["util"][:2]
        # /proc/stat counts every process on the core, so on a shared machine these may be
        # someone else's work.
        if cpu1 > 0.97:
            cell["flags"].append(f"CPU 1 (load generator) was {cpu1:.0%} busy: the saturating "
                                 "run may have been limited by the client, not the proxy")
        elif cpu0 < 0.9:
            cell["flags"].append(f"CPU 0 (proxy and upstream) was only {cpu0:.0%} busy in the "
                                 "saturating run")
    for rate, r in cell.get("rates", {}).items():
        if r["summary"]["rps"] < 0.95 * int(rate):
            cell["flags"].append(f"fell behind at {int(rate):,} req/s "
                                 f"(achieved {r['summary']['rps']:,.0f})")
    rounds = [m for m in (cell.get("saturating") or {}).get("rounds", [])]
    rounds += [m for r in cell.get("rates", {}).values() for m in r["rounds"]]
    if any(not m["cpu_agrees"] for m in rounds):
        cell["flags"].append("CPU from schedstat and from utime+stime disagreed in a round "
                             "(see results.json)")
    measured = bool(sat) and len(cell.get("rates", {})) == len(tm.rates)
    cell["ok"] = measured and not errors and not cell.get("error")


def strip_samples(results: dict) -> dict:
    """results.json without the per-request latencies."""
    clean = json.loads(json.dumps(results, default=str))
    for s in clean["scenarios"]:
        for cell in s["targets"].values():
            for r in cell.get("rates", {}).values():
                for m in r["rounds"]:
                    m.pop("latencies_us", None)
            for m in (cell.get("saturating") or {}).get("rounds", []):
                m.pop("latencies_us", None)
    return clean


def print_summary(results: dict) -> None:
    low = results["meta"]["timing"]["rates"][0]
    print(f"\n{'scenario':13} {'target':8} {'req/s':>9} {'CPU s/10k':>10} "
          f"{'p99@' + format(low, ','):>9} {'RSS MiB':>8}  status")
    for s in results["scenarios"]:
        for name, cell in s["targets"].items():
            sat = (cell.get("saturating") or {}).get("summary") or {}
            rate = cell.get("rates", {}).get(str(low), {}).get("summary") or {}
            status = "ok" if cell.get("ok") else "FAILED " + (cell.get("error") or "; ".join(
                cell.get("flags", [])))
            print(f"{s['name']:13} {name:8} {sat.get('rps', 0):9,.0f} "
                  f"{sat.get('cpu_per_10k', float('nan')):10.3f} "
                  f"{rate.get('p99_us', float('nan')):9,.0f} "
                  f"{cell.get('peak_rss_mib', 0):8.1f}  {status}")


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].strip() if text else "unknown"


def describe(args: argparse.Namespace, timing: Timing) -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    loadavg = open("/proc/loadavg").read().split()[:3]
    rev = first_line(["git", "-C", args.repo, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", args.repo, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": args.command,
        "body_bytes": BODY_BYTES,
        "timing": dataclasses.asdict(timing),
        "machine": {
            "cpu": cpu, "cores": os.cpu_count(), "memory": memory,
            "uname": " ".join(platform.uname()[i] for i in (0, 2, 3, 4)),
            "loadavg": " ".join(loadavg), "busy": float(loadavg[0]) > 0.5,
        },
        "versions": {
            "wasmesh": f"{first_line([args.wasmesh, '--version'])}, git {rev}"
                       + (" with local changes" if dirty else "")
                       + (f", {args.wasmesh_profile} build" if args.wasmesh_profile != "given"
                          else f", {args.wasmesh} (WASMESH_BIN)")
                       + (f"; wasmesh-pgo: {args.wasmesh_pgo} (bench/pgo: release profile "
                          "and PGO trained on this suite)" if args.wasmesh_pgo else ""),
            "Envoy": first_line([args.envoy, "--version"]).split("version:")[-1].strip(),
            "nginx": first_line(["nginx", "-v"]),
            "HAProxy": first_line(["haproxy", "-v"]),
            "wrk": first_line(["wrk", "-v"]),
            "h2load": first_line(["h2load", "--version"]),
            "OpenSSL (load generators, nginx, haproxy)": first_line(["openssl", "version"]),
            "rustc": first_line(["rustc", "--version"]),
        },
        "server_name": SERVER_NAME,
    }


if __name__ == "__main__":
    sys.exit(main())

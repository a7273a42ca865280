"""The load generators, pinned to their own CPU: wrk for saturating HTTP/1.1 (and TLS) runs,
h2load for saturating h2c runs and for every fixed-rate run.

Fixed rate: wrk2 is not in Debian and plain wrk only has closed-loop `delay()`, so fixed-rate
runs use h2load's `--rps` (a per-connection request clock; requests fall due on it and are
sent as soon as the connection is free). Its per-request log gives exact percentiles. Latency
is measured from when a request is sent, not from when it fell due, so a stall is under-counted
the way wrk's is (coordinated omission); at these rates — a small fraction of what each proxy
can do — queues stay short, and a run that fell behind its rate is flagged.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
# The one TLS 1.3 suite the load generators offer (wrk through pki's OpenSSL configuration).
TLS13_CIPHER = "TLS_AES_128_GCM_SHA256"


@dataclass
class Run:
    requests: int  # completed in the measured window
    seconds: float  # length of the measured window
    errors: int  # socket errors, timeouts and statuses other than 2xx
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    latencies_us: list[int] = field(default_factory=list, repr=False)  # fixed-rate runs only

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def percentile(sorted_values: list[int], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-p * len(sorted_values) // 100)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def _env(tls_conf: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if tls_conf is not None:
        env["OPENSSL_CONF"] = str(tls_conf)
    return env


def wrk(url: str, conns: int, seconds: float, headers: tuple[str, ...], cpu: str,
        tls_conf: Path | None, at_start: Callable[[], None]) -> Run:
    argv = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s",
            "--timeout", "5s", "-s", str(HERE / "wrk" / "report.lua")]
    for h in headers:
        argv += ["-H", h]
    at_start()
    out = subprocess.run(argv + [url], capture_output=True, text=True, env=_env(tls_conf),
                         timeout=seconds + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-800:]}{out.stderr[-800:]}")
    v = {k: int(x) for k, x in re.findall(r"(\w+)=(\d+)", line)}
    errors = sum(v[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Run(v["requests"], v["duration_us"] / 1e6, errors,
               v["p50"], v["p90"], v["p99"], v["p999"])


def negotiated(url: str, tls_conf: Path, cpu: str) -> str:
    """The TLS version and cipher one h2load request negotiates, as it prints them."""
    out = subprocess.run(
        ["taskset", "-c", cpu, "h2load", "--h1", "-n1", "-c1",
         f"--tls13-ciphers={TLS13_CIPHER}", url],
        capture_output=True, text=True, env=_env(tls_conf), timeout=30,
    ).stdout
    proto = re.search(r"TLS Protocol: (\S+)", out)
    cipher = re.search(r"Cipher: (\S+)", out)
    if not proto or not cipher:
        raise RuntimeError(f"no TLS session reported: {out[-500:]}")
    return f"{proto.group(1)} {cipher.group(1)}"


def h2load(url: str, *, h1: bool, conns: int, streams: int, seconds: float, warmup_s: float,
           rate: float | None, headers: tuple[str, ...], cpu: str, tls_conf: Path | None,
           log: Path, at_start: Callable[[], None]) -> Run:
    """One h2load run; `at_start` is called when the measured window begins (after the
    warm-up), for the CPU counters."""
    log.unlink(missing_ok=True)  # h2load appends
    argv = ["taskset", "-c", cpu, "h2load", "-t1", "-c", str(conns), "-m", str(streams),
            "-D", f"{int(seconds * 1000)}ms", "--warm-up-time", f"{int(warmup_s * 1000)}ms",
            "--log-file", str(log)]
    if h1:
        argv.append("--h1")
    if tls_conf is not None:
        argv.append(f"--tls13-ciphers={TLS13_CIPHER}")
    if rate is not None:
        argv += ["--rps", f"{rate / conns:.3f}"]
    for h in headers:
        argv += ["-H", h]
    proc = subprocess.Popen(argv + [url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env(tls_conf))
    # The window starts once the connections are up and the warm-up is over; h2load says
    # nothing then, so the clock decides (a few ms of slack against seconds of run).
    timer = threading.Timer(warmup_s, at_start)
    timer.start()
    try:
        out, _ = proc.communicate(timeout=seconds + warmup_s + 30)
    finally:
        timer.cancel()
    if proc.returncode != 0:
        raise RuntimeError(f"h2load failed ({proc.returncode}): {out[-1500:]}")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m is None:
        raise RuntimeError(f"h2load printed no totals: {out[-1500:]}")
    latencies, bad_status = [], 0
    for row in log.read_text().splitlines():
        cols = row.split("\t")
        if len(cols) < 3:
            continue
        if not cols[1].startswith("2"):
            bad_status += 1
        latencies.append(int(cols[2]))
    latencies.sort()
    # "failed" counts h2load's errored requests and HTTP-level failures (4xx, 5xx) alike.
    errors = max(int(m.group(5)), bad_status)
    run = Run(len(latencies), seconds, errors, percentile(latencies, 50),
              percentile(latencies, 90), percentile(latencies, 99), percentile(latencies, 99.9))
    if rate is not None:
        run.latencies_us = latencies
    return run

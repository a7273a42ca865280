"""Starting the upstream and the proxies pinned to a CPU, and stopping them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from . import procstat


class Service:
    """A process started by the suite, pinned to `cpus`; its output goes to `log`."""

    def __init__(self, name: str, argv: list[str], cpus: str, env: dict[str, str], log: Path):
        self.name = name
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpus, *argv],
            env={**os.environ, **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group, so stopping it reaches every process it forked.
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return procstat.tree(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, tail: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free right now on 127.0.0.1."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(service: Service, port: int, timeout_s: float = 60) -> None:
    """Until `port` accepts connections; raises if the service died or took too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited ({service.proc.returncode}):\n"
                               f"{service.output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{service.name} did not listen on {port} within {timeout_s:.0f}s:\n"
                       f"{service.output()}")

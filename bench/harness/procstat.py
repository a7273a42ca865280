"""CPU time and peak memory of a process tree, from /proc.

A proxy is a process tree (nginx: a master and a worker) of one or more threads. CPU time is
read two ways and both are kept:
- `/proc/PID/stat` utime + stime: every thread of the process, exited ones included, but counted
  in clock ticks (10 ms here);
- `/proc/PID/task/*/schedstat`: nanoseconds on CPU per live thread.
The suite reports the nanosecond figure (a 3 s round at 1k req/s uses ~0.1 s of CPU, about 10
ticks) and keeps the tick figure in results.json; `agrees()` flags a round where they differ by
more than sampling explains (a thread that exited mid-round would do that).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def tree(root: int) -> list[int]:
    """`root` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


@dataclass
class Cpu:
    ticks_s: float  # utime + stime
    sched_s: float  # sum of per-thread schedstat run time

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.ticks_s - other.ticks_s, self.sched_s - other.sched_s)

    def seconds(self) -> float:
        return self.sched_s if self.sched_s > 0 else self.ticks_s

    def agrees(self) -> bool:
        return abs(self.ticks_s - self.sched_s) <= 0.2 * self.sched_s + 5 / TICK


def cpu(pids: list[int]) -> Cpu:
    ticks = 0
    sched_ns = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    sched_ns += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return Cpu(ticks / TICK, sched_ns / 1e9)


def _status_mib(pids: list[int], field: str) -> float:
    total_kib = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def peak_rss_mib(pids: list[int]) -> float:
    """Sum of VmHWM over the tree (pages shared between nginx's processes count twice)."""
    return _status_mib(pids, "VmHWM")


def rss_mib(pids: list[int]) -> float:
    """Sum of VmRSS over the tree, now."""
    return _status_mib(pids, "VmRSS")


def cpu_busy() -> list[tuple[int, int]]:
    """(busy, total) jiffies per CPU, from /proc/stat."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                out.append((sum(v[:8]) - idle, sum(v[:8])))
    return out


def utilisation(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[float]:
    return [
        (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        for (b0, t0), (b1, t1) in zip(before, after)
    ]

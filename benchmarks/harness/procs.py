"""What a target costs while it is measured: CPU% and RSS of every process of its group, read from /proc.

The target runs in its own session, so its process group is exactly the server and everything it
spawned (workers, resource tracker); the sampler reads them in a background thread during a run.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_INTERVAL_S = 0.25
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcSample:
    """One reading of a process: CPU ticks (user+system) and resident memory."""

    pid: int
    start_ticks: int  # process start time; with pid it identifies the process across pid reuse
    state: str
    cpu_ticks: int
    rss_kib: int


def _read_stat(pid: int) -> tuple[str, int, int, int] | None:
    """Return (state, pgrp, utime+stime, starttime) from /proc/<pid>/stat, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    state, pgrp = fields[0], int(fields[2])
    utime, stime, starttime = int(fields[11]), int(fields[12]), int(fields[19])
    return state, pgrp, utime + stime, starttime


def _read_status(pid: int, key: str) -> str:
    """One field of /proc/<pid>/status ("" for vanished processes or absent fields)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return ""


def _read_rss_kib(pid: int) -> int:
    """VmRSS in KiB (0 for zombies, which have no VmRSS line, or vanished processes)."""
    value = _read_status(pid, "VmRSS")
    return int(value.split()[0]) if value else 0


def _read_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def group_pids(pgid: int, include_zombies: bool = False) -> list[int]:
    """All pids whose process group is ``pgid`` (zombies hold no resources: skipped by default)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read_stat(int(entry))
        if stat is None or stat[1] != pgid:
            continue
        if stat[0] == "Z" and not include_zombies:
            continue
        pids.append(int(entry))
    return sorted(pids)


def sample_group(pgid: int) -> list[ProcSample]:
    """Read CPU ticks and RSS of every live process in the group."""
    samples = []
    for pid in group_pids(pgid):
        stat = _read_stat(pid)
        if stat is None:
            continue
        state, _, ticks, start = stat
        samples.append(ProcSample(pid, start, state, ticks, _read_rss_kib(pid)))
    return samples


@dataclass
class ProcStats:
    """Per-process figures over the measured window."""

    pid: int
    role: str
    cmdline: str
    cpus_allowed: str  # affinity as the kernel sees it: proves --pin reached every process
    cpu_percent: float
    rss_mib_mean: float
    rss_mib_max: float


def _role(pid: int, leader: int, cmdline: str) -> str:
    """Label a process so the table can tell the app process from its workers."""
    if pid == leader:
        return "main"
    if "resource_tracker" in cmdline:
        return "resource_tracker"
    if "multiprocessing" in cmdline:
        return "mp-worker"
    return "child"


class GroupSampler:
    """Samples a process group from /proc in a background thread during a wrk run.

    CPU% of a process is its CPU-time delta between its first and last sample divided by
    the wall time between them (100% = one core). Samples are also taken synchronously
    at start() and stop(), so the window matches the wrk run.
    """

    def __init__(self, pgid: int, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.pgid = pgid
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        # (pid, start_ticks) -> list of (monotonic time, sample)
        self._series: dict[tuple[int, int], list[tuple[float, ProcSample]]] = {}

    def _take(self) -> None:
        now = time.monotonic()
        for s in sample_group(self.pgid):
            self._series.setdefault((s.pid, s.start_ticks), []).append((now, s))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take()

    def start(self) -> None:
        self._take()
        self._thread.start()

    def stop(self) -> list[ProcStats]:
        self._stop.set()
        self._thread.join()
        self._take()
        stats = []
        for (pid, _), series in self._series.items():
            (t0, first), (t1, last) = series[0], series[-1]
            cpu = 100.0 * (last.cpu_ticks - first.cpu_ticks) / CLK_TCK / (t1 - t0) if t1 > t0 else 0.0
            rss = [s.rss_kib / 1024 for _, s in series]
            cmd = _read_cmdline(pid)
            stats.append(
                ProcStats(
                    pid,
                    _role(pid, self.pgid, cmd),
                    cmd,
                    _read_status(pid, "Cpus_allowed_list"),
                    round(cpu, 1),
                    round(statistics.fmean(rss), 1),
                    round(max(rss), 1),
                )
            )
        # main first, then busiest first
        stats.sort(key=lambda p: (p.role != "main", -p.cpu_percent))
        return stats

"""Benchmark litserve against raw Starlette and FastAPI on the same trivial workload.

Every target serves ``POST /predict {"input": x} -> {"output": x**2}``, so what is
measured is the framework overhead: HTTP parsing, (de)serialisation, validation and,
for litserve, the hop between the server process and the inference worker.

For each round and each concurrency the targets run alternately (A B C A B C ...) so a
slow drift of the machine (thermal, noisy neighbours) hits every target alike. Each run:
fresh process on a free port -> time to first 200 -> ~1 s wrk warm-up -> measured wrk
run while CPU% and RSS of every process in the target's process group are sampled from
/proc -> SIGTERM/SIGKILL of the whole process group and a check that nothing is left.

Usage:
    python benchmarks/run.py [--targets litserve,starlette,fastapi] [--concurrency 1,8,64]
                             [--duration 10] [--rounds 2] [--pin] [--out benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "post.lua"
TARGETS: dict[str, Path] = {
    "litserve": BENCH_DIR / "targets" / "litserve_app.py",
    "starlette": BENCH_DIR / "targets" / "starlette_app.py",
    "fastapi": BENCH_DIR / "targets" / "fastapi_app.py",
}
BASELINE = "starlette"
HOST = "127.0.0.1"
# Must match wrk.body in post.lua; the readiness probe also checks the answer.
REQUEST_BODY = b'{"input": 4.0}'
EXPECTED_OUTPUT = 16.0
SERVER_CPU, CLIENT_CPU = 0, 1  # --pin: server group on CPU 0, wrk (and this harness) on CPU 1
WARMUP_S = 1
WRK_SOCKET_TIMEOUT = "5s"  # wrk's default of 2 s would turn slow answers into errors
SAMPLE_INTERVAL_S = 0.25
POLL_INTERVAL_S = 0.02
STOP_TIMEOUT_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- /proc


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


# --------------------------------------------------------------------------- target lifecycle


def free_port() -> int:
    """Ask the kernel for an unused port (tiny race window; acceptable on a quiet box)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def probe(port: int) -> bool:
    """One POST /predict; True only for a 200 carrying the right answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("POST", "/predict", body=REQUEST_BODY, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    except OSError:
        return False
    finally:
        conn.close()
    if resp.status != 200:
        return False
    try:
        correct = float(json.loads(body)["output"]) == EXPECTED_OUTPUT
    except (ValueError, KeyError, TypeError):
        correct = False
    if not correct:
        raise RuntimeError(f"wrong answer from target: {body!r}")
    return True


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


@dataclass
class Target:
    """A running target: its process (session/group leader), port and log file."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    startup_s: float = float("nan")

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session=True: the leader's pid is the group id

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def start_target(name: str, pin: bool, log_dir: Path, start_timeout_s: float) -> Target:
    """Start a target in its own session and wait (polling, with a deadline) for a 200."""
    port = free_port()
    cmd = [sys.executable, str(TARGETS[name]), str(port)]
    if pin:  # affinity is inherited by every process the target forks or spawns
        cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
    log_path = log_dir / f"{name}-{port}.log"
    # Repo root first on the path: benchmark this checkout's litserve, installed or not.
    pythonpath = os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p)
    env = {**os.environ, "PORT": str(port), "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, start_new_session=True
        )
    target = Target(name, port, proc, log_path)
    deadline = t0 + start_timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before answering:\n{target.log_tail()}")
        if probe(port):
            target.startup_s = time.perf_counter() - t0
            return target
        if time.perf_counter() > deadline:
            stop_target(target)
            raise RuntimeError(f"{name} gave no 200 within {start_timeout_s:.0f}s:\n{target.log_tail()}")
        time.sleep(POLL_INTERVAL_S)  # poll interval, not synchronisation: the loop re-checks the condition


def _wait_group_gone(target: Target, deadline: float) -> bool:
    """Poll until the leader is reaped and no live process of the group remains."""
    while True:
        if target.proc.poll() is not None and not group_pids(target.pgid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


def stop_target(target: Target) -> dict[str, Any]:
    """SIGTERM the whole group, SIGKILL after a deadline, then verify nothing is left."""
    sent_kill = False
    t0 = time.monotonic()
    try:
        os.killpg(target.pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if not _wait_group_gone(target, time.monotonic() + STOP_TIMEOUT_S):
        sent_kill = True
        try:
            os.killpg(target.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_group_gone(target, time.monotonic() + STOP_TIMEOUT_S)
    leftover = group_pids(target.pgid)
    still_listening = port_open(target.port)
    if leftover or still_listening:
        print(f"WARNING: {target.name} left pids {leftover} (port open: {still_listening})", file=sys.stderr)
    return {
        "sigkill_needed": sent_kill,
        "stop_s": round(time.monotonic() - t0, 3),
        "leftover_pids": leftover,
        "port_still_open": still_listening,
        "exit_code": target.proc.returncode,
    }


# --------------------------------------------------------------------------- wrk


def run_wrk(port: int, connections: int, duration_s: int, pin: bool) -> dict[str, Any]:
    """Drive the target with wrk (1 thread, N connections) and parse post.lua's BENCH_JSON line."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={WRK_SOCKET_TIMEOUT}",
        "-s",
        str(LUA_SCRIPT),
        f"http://{HOST}:{port}/predict",
    ]
    if pin:
        cmd = ["taskset", "-c", str(CLIENT_CPU), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            break
    else:
        raise RuntimeError(f"no BENCH_JSON line in wrk output:\n{out.stdout}")
    secs = result["duration_us"] / 1e6
    result["requests_per_s"] = result["requests"] / secs if secs else 0.0
    result["errors_total"] = sum(result["errors"].values())
    result["latency_ms"] = {k: v / 1000 for k, v in result["latency_us"].items()}
    return result


# --------------------------------------------------------------------------- one measurement


@dataclass
class RunResult:
    """Raw figures of one target at one concurrency in one round."""

    target: str
    concurrency: int
    round: int
    startup_s: float
    requests_per_s: float
    latency_ms: dict[str, float]
    errors_total: int
    wrk: dict[str, Any]
    processes: list[ProcStats]
    cpu_percent_total: float
    rss_mib_total: float
    shutdown: dict[str, Any] = field(default_factory=dict)


def measure(name: str, concurrency: int, rnd: int, args: argparse.Namespace, log_dir: Path) -> RunResult:
    target = start_target(name, args.pin, log_dir, args.start_timeout)
    try:
        run_wrk(target.port, concurrency, WARMUP_S, args.pin)  # warm-up: result discarded
        sampler = GroupSampler(target.pgid)
        sampler.start()
        try:
            wrk = run_wrk(target.port, concurrency, args.duration, args.pin)
        finally:
            procs = sampler.stop()
    finally:
        shutdown = stop_target(target)
    return RunResult(
        target=name,
        concurrency=concurrency,
        round=rnd,
        startup_s=round(target.startup_s, 3),
        requests_per_s=round(wrk["requests_per_s"], 1),
        latency_ms=wrk["latency_ms"],
        errors_total=wrk["errors_total"],
        wrk=wrk,
        processes=procs,
        cpu_percent_total=round(sum(p.cpu_percent for p in procs), 1),
        # Sum of RSS double-counts pages shared between processes: an upper bound.
        rss_mib_total=round(sum(p.rss_mib_max for p in procs), 1),
        shutdown=shutdown,
    )


# --------------------------------------------------------------------------- summary


def summarise(runs: list[RunResult]) -> list[dict[str, Any]]:
    """Median over rounds per (target, concurrency), plus ratios against Starlette."""
    keys = sorted({(r.target, r.concurrency) for r in runs}, key=lambda k: (k[1], list(TARGETS).index(k[0])))
    rows: list[dict[str, Any]] = []
    for name, conc in keys:
        rs = [r for r in runs if r.target == name and r.concurrency == conc]

        def med(f: Callable[[RunResult], float], rs: list[RunResult] = rs) -> float:
            return round(statistics.median(f(r) for r in rs), 3)

        # Per-process figures: medians by position (main first, then by CPU) across rounds.
        nproc = min(len(r.processes) for r in rs)
        procs = [
            {
                "role": rs[0].processes[i].role,
                "cpu_percent": round(statistics.median(r.processes[i].cpu_percent for r in rs), 1),
                "rss_mib": round(statistics.median(r.processes[i].rss_mib_max for r in rs), 1),
            }
            for i in range(nproc)
        ]
        rows.append(
            {
                "target": name,
                "concurrency": conc,
                "rounds": len(rs),
                "requests_per_s": med(lambda r: r.requests_per_s),
                "requests_per_s_min": min(r.requests_per_s for r in rs),
                "requests_per_s_max": max(r.requests_per_s for r in rs),
                "p50_ms": med(lambda r: r.latency_ms["p50"]),
                "p90_ms": med(lambda r: r.latency_ms["p90"]),
                "p99_ms": med(lambda r: r.latency_ms["p99"]),
                "p99_ms_min": min(r.latency_ms["p99"] for r in rs),
                "p99_ms_max": max(r.latency_ms["p99"] for r in rs),
                "errors_total": sum(r.errors_total for r in rs),
                "cpu_percent_total": med(lambda r: r.cpu_percent_total),
                "rss_mib_total": med(lambda r: r.rss_mib_total),
                "processes": procs,
                "startup_s": med(lambda r: r.startup_s),
            }
        )
    base = {row["concurrency"]: row for row in rows if row["target"] == BASELINE}
    for row in rows:
        b = base.get(row["concurrency"])
        row["throughput_vs_starlette"] = round(row["requests_per_s"] / b["requests_per_s"], 3) if b else None
        row["added_p50_ms_vs_starlette"] = round(row["p50_ms"] - b["p50_ms"], 3) if b else None
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = [
        "target",
        "conc",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "CPU% tot",
        "RSS MiB tot",
        "per process role:CPU%/RSS MiB",
        "start s",
        "x starlette",
        "+p50 ms",
    ]
    table = []
    for r in rows:
        procs = " ".join(f"{p['role']}:{p['cpu_percent']:.0f}%/{p['rss_mib']:.0f}" for p in r["processes"])
        ratio = r["throughput_vs_starlette"]
        added = r["added_p50_ms_vs_starlette"]
        table.append(
            [
                r["target"],
                str(r["concurrency"]),
                f"{r['requests_per_s']:.0f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p90_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                str(r["errors_total"]),
                f"{r['cpu_percent_total']:.0f}",
                f"{r['rss_mib_total']:.0f}",
                procs,
                f"{r['startup_s']:.2f}",
                "-" if ratio is None else f"{ratio:.2f}",
                "-" if added is None else f"{added:+.2f}",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


# --------------------------------------------------------------------------- main


def _csv(kind: type, value: str) -> list[Any]:
    return [kind(v.strip()) for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--targets",
        type=lambda s: _csv(str, s),
        default=["litserve", "starlette", "fastapi"],
        help="comma-separated, from: " + ",".join(TARGETS),
    )
    p.add_argument(
        "--concurrency",
        type=lambda s: _csv(int, s),
        default=[1, 8, 64],
        help="comma-separated wrk connection counts",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds of measured load per run")
    p.add_argument("--rounds", type=int, default=2, help="repetitions of the whole target x concurrency grid")
    p.add_argument(
        "--pin",
        action="store_true",
        help=f"pin the server group to CPU {SERVER_CPU} and wrk to CPU {CLIENT_CPU} (taskset)",
    )
    p.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for the first 200")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results.json")
    args = p.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown targets {unknown}; choose from {list(TARGETS)}")
    return args


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in ["litserve", "starlette", "fastapi", "uvicorn", "uvloop", "httptools", "pydantic"]:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "wrk not found. Install it, e.g. `sudo apt-get install wrk` (Debian/Ubuntu) "
            "or `brew install wrk` (macOS), then re-run.",
            file=sys.stderr,
        )
        return 2
    if args.pin:
        if shutil.which("taskset") is None:
            print("--pin needs taskset: `sudo apt-get install util-linux`.", file=sys.stderr)
            return 2
        if not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
            print(f"--pin needs CPUs {SERVER_CPU} and {CLIENT_CPU} available.", file=sys.stderr)
            return 2
        # Keep this harness (sampler thread included) off the server's core.
        os.sched_setaffinity(0, {CLIENT_CPU})

    runs: list[RunResult] = []
    started = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="litserve-bench-") as tmp:
        for rnd in range(1, args.rounds + 1):
            for conc in args.concurrency:
                for name in args.targets:
                    try:
                        r = measure(name, conc, rnd, args, Path(tmp))
                    except RuntimeError as exc:
                        print(f"ERROR: {name} c={conc} round {rnd}: {exc}", file=sys.stderr)
                        return 1
                    runs.append(r)
                    print(
                        f"[round {rnd}/{args.rounds}] {name:9s} c={conc:<4d} {r.requests_per_s:9.0f} req/s  "
                        f"p50 {r.latency_ms['p50']:.2f} ms  p99 {r.latency_ms['p99']:.2f} ms  "
                        f"errors {r.errors_total}  start {r.startup_s:.2f}s  stop {r.shutdown['stop_s']:.2f}s"
                        + ("  (ignored SIGTERM: needed SIGKILL)" if r.shutdown["sigkill_needed"] else ""),
                        file=sys.stderr,
                        flush=True,
                    )

    rows = summarise(runs)
    print()
    print_table(rows)
    result = {
        "meta": {
            "started_utc": started.isoformat(),
            "argv": sys.argv,
            "targets": args.targets,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "pin": args.pin,
            "warmup_s": WARMUP_S,
            "wrk_threads": 1,
            "wrk_socket_timeout": WRK_SOCKET_TIMEOUT,
            "request_body": REQUEST_BODY.decode(),
            "python": sys.version,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "git_commit": _git_commit(),
            "versions": _versions(),
            "units": {
                "latency": "ms",
                "cpu_percent": "100 = one core, averaged over the measured run",
                "rss": "MiB (sum over processes double-counts shared pages)",
            },
        },
        "summary": rows,
        "runs": [asdict(r) for r in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nraw results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

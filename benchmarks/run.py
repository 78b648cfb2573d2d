"""Benchmark litserve against raw Starlette and FastAPI on the same trivial workload.

Every target serves ``POST /predict {"input": x} -> {"output": x**2}``, so what is
measured is the framework overhead: HTTP parsing, (de)serialisation, validation and,
for litserve, the hop between the server process and the inference worker.

For each round and each concurrency the targets run alternately (A B C A B C ...) so a
slow drift of the machine (thermal, noisy neighbours) hits every target alike. Each run:
fresh process on a free port -> time to first 200 -> ~1 s wrk warm-up -> measured wrk
run while CPU% and RSS of every process in the target's process group are sampled from
/proc -> SIGTERM/SIGKILL of the whole process group and a check that nothing is left.

The parts live in benchmarks/harness/: targets.py (the servers, one file each in targets/, started
and stopped as process groups), wrk.py (the load), procs.py (CPU and memory from /proc), report.py
(medians, the table, the JSON record). This file only drives them.

Usage:
    python benchmarks/run.py [--targets litserve,starlette,fastapi] [--concurrency 1,8,64]
                             [--duration 10] [--rounds 2] [--pin] [--out benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from harness.procs import GroupSampler  # noqa: E402
from harness.report import RunResult, git_commit, print_table, summarise, versions  # noqa: E402
from harness.targets import CLIENT_CPU, SERVER_CPU, discover, start_target, stop_target  # noqa: E402
from harness.wrk import REQUEST_BODY, WARMUP_S, WRK_SOCKET_TIMEOUT, probe, run_wrk  # noqa: E402

TARGETS = {name: t.path for name, t in discover("predict").items()}


def measure(name: str, concurrency: int, rnd: int, args: argparse.Namespace, log_dir: Path) -> RunResult:
    target = start_target(name, args.pin, log_dir, args.start_timeout, probe)
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


# --------------------------------------------------------------------------- main


def _csv(kind: type, value: str) -> list[Any]:
    return [kind(v.strip()) for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--targets",
        type=lambda s: _csv(str, s),
        default=["litserve", "starlette", "fastapi"],
        help="comma-separated, from: " + ",".join(TARGETS) + " (each a file in benchmarks/targets/)",
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

    print(server_stack(), file=sys.stderr, flush=True)
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

    rows = summarise(runs, list(TARGETS))
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
            "git_commit": git_commit(),
            "versions": versions(),
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


def server_stack() -> str:
    """Which event loop and HTTP parser uvicorn's "auto" picks here (every target runs under uvicorn)."""
    v = versions()
    loop = f"uvloop {v['uvloop']}" if v["uvloop"] else "asyncio (no uvloop: pip install 'uvicorn[standard]')"
    http = f"httptools {v['httptools']}" if v["httptools"] else "h11 (no httptools: pip install 'uvicorn[standard]')"
    return f"server stack: uvicorn {v['uvicorn']}, event loop {loop}, HTTP parser {http}"


if __name__ == "__main__":
    sys.exit(main())

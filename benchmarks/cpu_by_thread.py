"""Where a request's time goes: CPU and context switches per request, for every thread of a target.

At one connection, a request's latency is about the CPU the server spends on it, since the server's
threads run one after the other on its one core (``--pin``). This prints, for each thread of the
target's process group (the HTTP process, its ZeroMQ I/O thread, each worker's main, reading and I/O
threads), the CPU microseconds and context switches per request while wrk drives it, next to the
request rate and p50 latency. Run it for litserve and for inline Starlette to see what the crossing
to a worker costs and where:

    python3 benchmarks/cpu_by_thread.py --target litserve --concurrency 1
    python3 benchmarks/cpu_by_thread.py --target starlette --concurrency 1

It reads ``/proc/<pid>/task/<tid>/stat`` (utime + stime, in clock ticks) and ``.../status``
(voluntary + involuntary context switches) before and after the measured run (Linux only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.procs import group_pids  # noqa: E402
from harness.targets import CLIENT_CPU, SERVER_CPU, discover, start_target, stop_target  # noqa: E402
from harness.wrk import probe, run_wrk  # noqa: E402

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
WARMUP_S = 2


def threads(pgid: int) -> dict[tuple[int, int], tuple[str, float, int]]:
    """(pid, tid) -> (thread name, CPU seconds, context switches) for every thread of the group."""
    out = {}
    for pid in group_pids(pgid):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            base = f"/proc/{pid}/task/{tid}"
            try:
                with open(f"{base}/stat") as f:
                    stat = f.read()
                with open(f"{base}/status") as f:
                    status = f.read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) * TICK_S
            switches = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)
            role = "main" if int(tid) == pid else name
            out[(pid, int(tid))] = (f"{'app' if pid == pgid else 'worker'} {role}", cpu, switches)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="litserve", choices=sorted(discover("predict")))
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=int, default=6)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("needs wrk and taskset (see benchmarks/README.md)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {CLIENT_CPU})
    with tempfile.TemporaryDirectory() as logs:
        target = start_target(args.target, True, Path(logs), 60, probe)
        try:
            run_wrk(target.port, args.concurrency, WARMUP_S, True)
            before = threads(target.pgid)
            result = run_wrk(target.port, args.concurrency, args.duration, True)
            after = threads(target.pgid)
        finally:
            stop_target(target)
    n = result["requests"]
    print(
        f"{args.target} at {args.concurrency} connection(s), server on CPU {SERVER_CPU}: "
        f"{result['requests_per_s']:.0f} req/s, p50 {result['latency_ms']['p50']:.3f} ms"
    )
    total_cpu = total_switches = 0.0
    print(f"{'thread':<28} {'CPU us/request':>15} {'switches/request':>17}")
    for key, (name, cpu, switches) in sorted(after.items()):
        if key not in before:
            continue
        cpu_us = (cpu - before[key][1]) / n * 1e6
        per = (switches - before[key][2]) / n
        total_cpu += cpu_us
        total_switches += per
        if cpu_us >= 0.5 or per >= 0.05:
            print(f"{name:<28} {cpu_us:>15.1f} {per:>17.2f}")
    print(f"{'all threads':<28} {total_cpu:>15.1f} {total_switches:>17.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Mixed work: short requests next to long ones, against the ideal of one shared queue.

Two workers; 10% of requests take 200 ms, 90% take 5 ms (the model sleeps: the cost is the wait, not
the CPU, so a 2-core box can run it). Arrivals are open-loop (Poisson, fixed seed) at ~70% of what
the two workers can serve, each request on a connection of its own from a pool, so a slow answer
never delays the next arrival. Reported: p50/p99 of the short requests' latency, next to the same
figures for an ideal single shared FIFO queue with two servers fed the *same* arrival times and
service times (computed exactly, no HTTP): the gap is what dispatch costs. A dispatcher that parks
short requests behind long ones on a busy worker (head-of-line blocking) shows a p99 near 200 ms.

    python benchmarks/bench_mixed.py                  # 20 s at 70% load
    python benchmarks/bench_mixed.py --duration 30 --load 0.8

It prints the event loop and HTTP parser the server ran with (uvloop/httptools when installed).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _rawclient import Connection, ServerProcess, build_post, free_port, percentile  # noqa: E402

import litserve as ls  # noqa: E402

LONG_S, SHORT_S, LONG_SHARE = 0.200, 0.005, 0.10


class SleepAPI(ls.LitAPI):
    """{"ms": n} -> sleeps n ms (the model's work), answers {"ms": n}."""

    def setup(self, device):
        pass

    def predict(self, x):
        time.sleep(x["ms"] / 1000)  # model behaviour: the request's service time
        return {"ms": x["ms"]}


def serve(port: int, workers: int) -> None:
    server = ls.LitServer(SleepAPI(), accelerator="cpu", devices=1, workers_per_device=workers, timeout=60)
    server.run(port=port, generate_client_file=False, log_level="warning", access_log=False, timeout_keep_alive=120)


def plan(duration: float, load: float, workers: int, seed: int) -> list[tuple[float, float]]:
    """(arrival offset, service seconds) for each request."""
    rng = random.Random(seed)
    mean = LONG_SHARE * LONG_S + (1 - LONG_SHARE) * SHORT_S
    rate = load * workers / mean
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return out
        out.append((t, LONG_S if rng.random() < LONG_SHARE else SHORT_S))


def ideal_fifo(requests: list[tuple[float, float]], workers: int) -> list[float]:
    """Latency of each request in one FIFO queue served by ``workers`` servers (no overhead)."""
    free = [0.0] * workers  # when each server frees, as a heap
    latencies = []
    for arrival, service in requests:
        start = max(arrival, heapq.heappop(free))
        heapq.heappush(free, start + service)
        latencies.append(start + service - arrival)
    return latencies


async def run_load(port: int, requests: list[tuple[float, float]]) -> list[float]:
    pool: list[Connection] = []
    latencies = [float("nan")] * len(requests)
    bodies = {s: build_post("/predict", {"ms": round(s * 1000)}) for s in (LONG_S, SHORT_S)}

    async def one(i: int, at: float, service: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))  # open loop: the arrival schedule
        conn = pool.pop() if pool else await Connection.open(port)
        t = time.perf_counter()
        try:
            status, body = await conn.request(bodies[service])
        except (OSError, asyncio.IncompleteReadError):
            status = 408
        if status == 408:  # the server closed an idle pooled connection: a fresh one, the clock kept
            conn.close()
            conn = await Connection.open(port)
            status, body = await conn.request(bodies[service])
        latencies[i] = time.perf_counter() - t
        if status != 200:
            raise RuntimeError(f"status {status}: {body[:200]!r}")
        pool.append(conn)

    for _ in range(32):  # warm connections, so the first arrivals do not pay for a TCP handshake
        pool.append(await Connection.open(port))
    t0 = time.perf_counter() + 0.2
    await asyncio.gather(*(one(i, t0 + at, s) for i, (at, s) in enumerate(requests)))
    for conn in pool:
        conn.close()
    return latencies


def server_stack() -> str:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    return f"uvicorn auto: loop={loop}, http={http}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--load", type=float, default=0.7, help="offered load, a share of the workers' capacity")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of arrivals")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.workers)
        return 0

    requests = plan(args.duration, args.load, args.workers, args.seed)
    short = [i for i, (_, s) in enumerate(requests) if s == SHORT_S]
    ideal = ideal_fifo(requests, args.workers)
    port = free_port()
    with ServerProcess(os.path.abspath(__file__), ["--workers", str(args.workers)], port):
        measured = asyncio.run(run_load(port, requests))
    rows = {
        "litserve": [measured[i] for i in short],
        "ideal shared queue": [ideal[i] for i in short],
    }
    print(
        f"{len(requests)} requests in {args.duration:.0f} s ({len(short)} short of {SHORT_S * 1e3:.0f} ms, "
        f"{len(requests) - len(short)} long of {LONG_S * 1e3:.0f} ms), {args.workers} workers, "
        f"load {args.load:.0%}, {os.cpu_count()} CPUs; server: {server_stack()}"
    )
    print(f"{'short requests':<20} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    out = {}
    for name, values in rows.items():
        p50, p90, p99 = (percentile(values, q) * 1e3 for q in (50, 90, 99))
        out[name] = {"p50_ms": round(p50, 2), "p90_ms": round(p90, 2), "p99_ms": round(p99, 2)}
        print(f"{name:<20} {p50:>8.1f} {p90:>8.1f} {p99:>8.1f}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Streaming throughput: chunks/s on one stream and on 8 concurrent streams, and time to first chunk.

The server is a ``LitServer`` (stream=True) whose ``predict`` is a generator yielding 50 small JSON
chunks, started in a subprocess (its own process group, stopped as a group) on 127.0.0.1. The client
is the raw asyncio client of ``_rawclient.py``: one keep-alive connection per stream, NDJSON read
through the chunked framing, lines counted. Its own CPU use is printed, to show it is not the limit.

    python benchmarks/bench_streaming.py                       # every config, 5 s per measurement
    python benchmarks/bench_streaming.py --configs sync --duration 10

Configs: ``sync`` (def predict generator, 1 worker), ``sync2`` (the same, workers_per_device=2),
``async`` (async generator, 1 worker, max_concurrency=8). Target: >= 15,000 chunks/s in total at 8
concurrent streams on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _rawclient import Connection, ServerProcess, build_post, cpu_seconds, free_port, percentile  # noqa: E402

import litserve as ls  # noqa: E402

CHUNKS = 50
CONFIGS = {
    "sync": ["--mode", "sync", "--workers", "1"],
    "sync2": ["--mode", "sync", "--workers", "2"],
    "async": ["--mode", "async", "--workers", "1"],
}


# -- server side ---------------------------------------------------------------------------------------
class SyncStream(ls.LitAPI):
    def predict(self, x):
        for i in range(x["n"]):
            yield {"i": i, "token": "tok"}


class AsyncStream(ls.LitAPI):
    async def predict(self, x):
        for i in range(x["n"]):
            yield {"i": i, "token": "tok"}


def serve(port: int, mode: str, workers: int) -> None:
    api = SyncStream(stream=True) if mode == "sync" else AsyncStream(stream=True, max_concurrency=8)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=workers, timeout=30)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning", access_log=False)


# -- client side ---------------------------------------------------------------------------------------
async def one_user(port: int, request: bytes, until: float, ttfc: list[float]) -> tuple[int, int]:
    conn = await Connection.open(port)
    chunks = streams = 0
    try:
        while time.perf_counter() < until:
            status, lines, first = await conn.stream(request)
            if status != 200 or lines != CHUNKS:
                raise RuntimeError(f"bad stream: status {status}, {lines} lines")
            chunks += lines
            streams += 1
            ttfc.append(first)
    finally:
        conn.close()
    return chunks, streams


async def measure(port: int, users: int, duration: float) -> dict:
    request = build_post("/predict", {"n": CHUNKS})
    # warm-up: a second of the same load, discarded
    await asyncio.gather(*(one_user(port, request, time.perf_counter() + 1.0, []) for _ in range(users)))
    ttfc: list[float] = []
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    results = await asyncio.gather(*(one_user(port, request, t0 + duration, ttfc) for _ in range(users)))
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    chunks = sum(c for c, _ in results)
    streams = sum(s for _, s in results)
    return {
        "users": users,
        "streams": streams,
        "chunks_per_s": chunks / elapsed,
        "streams_per_s": streams / elapsed,
        "ttfc_p50_ms": percentile(ttfc, 50) * 1e3,
        "ttfc_p99_ms": percentile(ttfc, 99) * 1e3,
        "client_cpu_pct": 100 * cpu / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="sync", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--configs", default="sync,sync2,async", help="comma-separated: " + ",".join(CONFIGS))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent streams in the second measurement")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.mode, args.workers)
        return 0
    print(f"{CHUNKS} chunks per stream, {args.duration:.0f} s per measurement, {os.cpu_count()} CPUs")
    header = (
        f"{'config':<7} {'streams':>7} {'chunks/s':>10} {'streams/s':>9} "
        f"{'TTFC p50 ms':>11} {'TTFC p99 ms':>11} {'client CPU%':>11}"
    )
    print(header)
    best = 0.0
    for name in args.configs.split(","):
        port = free_port()
        with ServerProcess(os.path.abspath(__file__), CONFIGS[name], port):
            for users in (1, args.concurrency):
                r = asyncio.run(measure(port, users, args.duration))
                print(
                    f"{name:<7} {users:>7} {r['chunks_per_s']:>10,.0f} {r['streams_per_s']:>9,.1f} "
                    f"{r['ttfc_p50_ms']:>11.2f} {r['ttfc_p99_ms']:>11.2f} {r['client_cpu_pct']:>11.0f}"
                )
                if users == args.concurrency:
                    best = max(best, r["chunks_per_s"])
    target = 15000
    print(
        f"best at {args.concurrency} streams: {best:,.0f} chunks/s (target >= {target:,}): "
        f"{'met' if best >= target else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Batching throughput: the same torch MLP served unbatched and with ``max_batch_size=8``, at 32
concurrent clients, with p50/p99 latency.

The model: Linear(32, W) -> ReLU -> [Linear(W, W) -> ReLU] x L -> Linear(W, 10), W=1024 and L=6 by
default, on CPU with ``torch.set_num_threads(1)`` in ``setup`` (fair on a 2-core box: one core for the
model, one for the HTTP side). First the script times the bare model in this process for a batch of 1
and of 8 and prints the cost ratio; batching can at best multiply throughput by 8 / that ratio.

Each server is a ``LitServer`` started in a subprocess (its own process group, stopped as a group) on
127.0.0.1. The client is the raw asyncio client of ``_rawclient.py``, one keep-alive connection per
simulated user, closed loop; its CPU use is printed to show it is not the limit.

    python benchmarks/bench_batching.py
    python benchmarks/bench_batching.py --duration 10 --layers 8 --batch-timeout 0.005

Target: batched throughput >= 3x unbatched, where a batch of 8 costs < 2x one sample.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _rawclient import Connection, ServerProcess, build_post, cpu_seconds, free_port, percentile  # noqa: E402

import litserve as ls  # noqa: E402

IN_FEATURES = 32


def build_model(width: int, layers: int):
    import torch

    torch.manual_seed(0)
    mods = [torch.nn.Linear(IN_FEATURES, width), torch.nn.ReLU()]
    for _ in range(layers):
        mods += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    mods.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*mods).eval()


class MLPAPI(ls.LitAPI):
    def __init__(self, width: int, layers: int, **kw) -> None:
        super().__init__(**kw)
        self.width, self.layers = width, layers

    def setup(self, device):
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        self.model = build_model(self.width, self.layers).to(device)

    def decode_request(self, request):
        return self.torch.tensor(request["x"], dtype=self.torch.float32)

    def predict(self, x):
        with self.torch.inference_mode():
            if self.max_batch_size == 1:
                return self.model(x.unsqueeze(0))[0]
            return self.model(x)  # the default batch() stacked the inputs: (batch, 32)

    def encode_response(self, logits):
        return {"label": int(logits.argmax()), "score": round(float(logits.max()), 4)}


def serve(port: int, width: int, layers: int, max_batch_size: int, batch_timeout: float) -> None:
    api = MLPAPI(width, layers, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", devices=1, timeout=60)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning", access_log=False)


def model_cost(width: int, layers: int, repeat: int = 300) -> tuple[float, float]:
    """Median seconds of one forward pass for a batch of 1 and of 8, one thread."""
    import torch

    torch.set_num_threads(1)
    model = build_model(width, layers)

    def timed(batch: int) -> float:
        x = torch.randn(batch, IN_FEATURES)
        times = []
        with torch.inference_mode():
            for _ in range(30):
                model(x)
            for _ in range(repeat):
                t = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t)
        return percentile(times, 50)

    # interleave so that drift of a shared machine hits both alike
    ones, eights = [], []
    for _ in range(3):
        ones.append(timed(1))
        eights.append(timed(8))
    return sorted(ones)[1], sorted(eights)[1]


async def user(port: int, requests: list[bytes], until: float, latencies: list[float]) -> int:
    conn = await Connection.open(port)
    done = 0
    try:
        while time.perf_counter() < until:
            raw = requests[done % len(requests)]
            t = time.perf_counter()
            status, _ = await conn.request(raw)
            latencies.append(time.perf_counter() - t)
            if status != 200:
                raise RuntimeError(f"status {status}")
            done += 1
    finally:
        conn.close()
    return done


async def load(port: int, concurrency: int, duration: float) -> dict:
    rng = random.Random(0)
    requests = [
        build_post("/predict", {"x": [round(rng.uniform(-1, 1), 4) for _ in range(IN_FEATURES)]}) for _ in range(64)
    ]
    await asyncio.gather(*(user(port, requests, time.perf_counter() + 1.5, []) for _ in range(concurrency)))
    latencies: list[float] = []
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    counts = await asyncio.gather(*(user(port, requests, t0 + duration, latencies) for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return {
        "rps": sum(counts) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "client_cpu_pct": 100 * cpu / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.01, help="seconds (batched run only)")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=6, help="hidden W x W layers")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.width, args.layers, args.max_batch_size, args.batch_timeout)
        return 0

    one, eight = model_cost(args.width, args.layers)
    print(
        f"MLP width {args.width}, {args.layers} hidden layers, 1 thread: batch of 1 {one * 1e3:.2f} ms, "
        f"batch of 8 {eight * 1e3:.2f} ms, cost ratio {eight / one:.2f}x "
        f"(ideal batching speed-up {8 * one / eight:.1f}x)"
    )
    print(f"concurrency {args.concurrency}, {args.duration:.0f} s per measurement, {os.cpu_count()} CPUs")
    print(f"{'server':<24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'client CPU%':>11}")
    results = {}
    runs = [
        ("unbatched", ["--max-batch-size", "1"]),
        (
            f"max_batch_size={args.max_batch_size}",
            ["--max-batch-size", str(args.max_batch_size), "--batch-timeout", str(args.batch_timeout)],
        ),
    ]
    for name, extra in runs:
        port = free_port()
        common = ["--width", str(args.width), "--layers", str(args.layers)]
        with ServerProcess(os.path.abspath(__file__), common + extra, port):
            r = asyncio.run(load(port, args.concurrency, args.duration))
        results[name] = r
        print(f"{name:<24} {r['rps']:>8,.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['client_cpu_pct']:>11.0f}")
    base, batched = results["unbatched"]["rps"], results[runs[1][0]]["rps"]
    speedup = batched / base
    print(
        f"speed-up {speedup:.2f}x with a batch cost ratio of {eight / one:.2f}x "
        f"(target >= 3x where the ratio is < 2x): {'met' if speedup >= 3 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

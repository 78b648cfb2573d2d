"""The floor under litserve's added latency: one ZeroMQ round trip between two processes.

litserve's request path crosses a ROUTER/DEALER pair over ``ipc://`` twice (request out, reply back).
Each ZeroMQ message passes through the sender's I/O thread and the receiver's I/O thread, so one
round trip wakes six threads in turn. This script measures that round trip with nothing else around
it, blocking sockets and a 20-byte payload, so the figure can be compared with litserve's added p50.

    python benchmarks/zmq_roundtrip.py            # both processes wherever the OS puts them
    taskset -c 0 python benchmarks/zmq_roundtrip.py   # both on one core, as in run.py --pin
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time

import zmq


def _echo(address: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(address)
    sock.send(b"ready")
    while True:
        frames = sock.recv_multipart()
        if frames[0] == b"stop":
            break
        sock.send_multipart(frames)
    sock.close(linger=0)
    ctx.term()


def main(n: int = 20000) -> None:
    directory = tempfile.mkdtemp(prefix="zmq-rt-")
    address = f"ipc://{directory}/rt.sock"
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(address)
    proc = multiprocessing.get_context("spawn").Process(target=_echo, args=(address,))
    proc.start()
    try:
        peer, _ = router.recv_multipart()
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            router.send_multipart([peer, b"x" * 20])
            router.recv_multipart()
            samples.append(time.perf_counter() - start)
        samples.sort()
        print(
            f"ZeroMQ ipc round trip over {n}: p50 {samples[n // 2] * 1e6:.1f} us, "
            f"p99 {samples[int(n * 0.99)] * 1e6:.1f} us, mean {statistics.fmean(samples) * 1e6:.1f} us "
            f"(CPUs allowed: {sorted(os.sched_getaffinity(0))})"
        )
        router.send_multipart([peer, b"stop"])
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
        router.close(linger=0)
        ctx.term()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)

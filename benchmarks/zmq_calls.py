"""What pyzmq's Python-level helpers cost per message, against ``litserve.core.wire``.

``send_multipart``/``recv_multipart`` check each frame in Python and combine flags through
``enum.IntFlag``; ``getsockopt`` builds an enum per call. litserve sends and reads every message
through ``core/wire.py`` (the socket's compiled methods, plain-int flags, ``Frame.more``). This
measures one send plus one receive of a request-sized message (identity, header, item head, body)
over ``inproc://``, where no I/O thread is involved, so the figures are the Python-call cost alone.

    python benchmarks/zmq_calls.py
"""

from __future__ import annotations

import statistics
import time

import zmq

from litserve.core import wire

FRAMES = [b"\x01D", b"\x00" * 10 + b"\x00\xc8", b'{"output":16.0}']
N = 50_000


def _pair() -> tuple[zmq.Context, zmq.Socket, zmq.Socket]:
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for sock in (router, dealer):
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
    router.bind("inproc://zmq-calls")
    dealer.setsockopt(zmq.IDENTITY, b"worker-0")
    dealer.connect("inproc://zmq-calls")
    return ctx, router, dealer


def _pyzmq(dealer: zmq.Socket, router: zmq.Socket) -> None:
    for _ in range(N):
        dealer.send_multipart(FRAMES, zmq.NOBLOCK)
        router.recv_multipart(zmq.NOBLOCK)


def _wire(dealer: zmq.Socket, router: zmq.Socket) -> None:
    for _ in range(N):
        wire.send(dealer, FRAMES, wire.NOBLOCK)
        wire.recv(router, wire.NOBLOCK)


def main(rounds: int = 5) -> None:
    ctx, router, dealer = _pair()
    wire.send(dealer, FRAMES)
    assert wire.recv(router) == [b"worker-0", *FRAMES]  # same bytes either way
    results: dict[str, list[float]] = {"pyzmq send_multipart/recv_multipart": [], "litserve.core.wire": []}
    for _ in range(rounds):  # alternate, so a noisy moment hits both
        for name, run in zip(results, (_pyzmq, _wire), strict=True):
            started = time.perf_counter()
            run(dealer, router)
            results[name].append((time.perf_counter() - started) / N * 1e6)
    for name, figures in results.items():
        print(f"{name:40s} {statistics.median(figures):6.2f} µs per send + receive (median of {rounds})")
    router.close()
    dealer.close()
    ctx.term()


if __name__ == "__main__":
    main()

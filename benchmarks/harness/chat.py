"""The ``chat`` workload: OpenAI-style streamed chat completions, as many concurrent streams as asked.

Each simulated user keeps one keep-alive connection and sends ``POST /v1/chat/completions`` with
``"stream": true`` back to back until the deadline, reading the Server-Sent Events through the
chunked framing. A token is one event carrying ``"content"``; time to first token (TTFT) is from
sending the request to the first such event. Plain asyncio sockets, no HTTP library: the client
must not be what limits the figures (its own CPU use is reported).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from dataclasses import dataclass, field

from _rawclient import Connection, build_post, cpu_seconds, percentile

from .targets import HOST

PATH = "/v1/chat/completions"


def chat_body(max_tokens: int, i: int = 0) -> dict:
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": f"Tell me a story, number {i}."}],
        "max_tokens": max_tokens,
        "stream": True,
    }


def probe(port: int) -> bool:
    """One non-streamed completion of one token: True once the server answers it with 200."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    body = json.dumps({**chat_body(1), "stream": False}).encode()
    try:
        conn.request("POST", PATH, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    except OSError:
        return False
    finally:
        conn.close()
    if resp.status == 200 and json.loads(data).get("object") == "chat.completion":
        return True
    if resp.status in (200, 404, 405):
        raise RuntimeError(f"not an OpenAI chat server: {resp.status} {data[:200]!r}")
    return False


async def one_stream(conn: Connection, request: bytes) -> tuple[int, int, float, float]:
    """(status, tokens, seconds to the first token, seconds to the end) of one streamed completion."""
    start = time.perf_counter()
    conn.writer.write(request)
    status, headers = await conn._head()
    reader = conn.reader
    tokens = 0
    first = None
    if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
        length = int(headers.get(b"content-length", b"0"))
        await reader.readexactly(length)
        now = time.perf_counter() - start
        return status, 0, now, now
    while True:
        size = int((await reader.readline()).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readline()
            break
        data = await reader.readexactly(size + 2)
        n = data.count(b'"content":')
        if n and first is None:
            first = time.perf_counter() - start
        tokens += n
    end = time.perf_counter() - start
    return status, tokens, first if first is not None else end, end


@dataclass
class ChatLoad:
    streams: int
    completions: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0
    ttft_s: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "streams": self.streams,
            "completions": self.completions,
            "tokens_per_s": round(self.tokens / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "ttft_p50_ms": round(percentile(self.ttft_s, 50) * 1e3, 2),
            "ttft_p99_ms": round(percentile(self.ttft_s, 99) * 1e3, 2),
            "client_cpu_percent": round(100 * self.client_cpu_s / self.elapsed_s, 1) if self.elapsed_s else 0.0,
        }


async def _user(port: int, i: int, max_tokens: int, until: float, load: ChatLoad | None) -> None:
    conn = await Connection.open(port)
    request = build_post(PATH, chat_body(max_tokens, i))
    try:
        while time.perf_counter() < until:
            status, tokens, ttft, _ = await one_stream(conn, request)
            if status != 200 or tokens != max_tokens:
                raise RuntimeError(f"bad completion: status {status}, {tokens} tokens of {max_tokens}")
            if load is not None:
                load.completions += 1
                load.tokens += tokens
                load.ttft_s.append(ttft)
    finally:
        conn.close()


async def run_chat_load(port: int, streams: int, max_tokens: int, duration_s: float, warmup_s: float = 1.0) -> dict:
    """``streams`` concurrent users for ``duration_s`` (after a discarded warm-up); the figures."""
    warm_until = time.perf_counter() + warmup_s
    await asyncio.gather(*(_user(port, i, max_tokens, warm_until, None) for i in range(streams)))
    load = ChatLoad(streams)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(_user(port, i, max_tokens, t0 + duration_s, load) for i in range(streams)))
    load.elapsed_s = time.perf_counter() - t0
    load.client_cpu_s = cpu_seconds() - cpu0
    return load.summary()

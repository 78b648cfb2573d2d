"""A minimal asyncio HTTP/1.1 client for the benchmarks in this folder (bench_streaming.py,
bench_batching.py), plus the start/stop of a server subprocess in its own process group.

Why not httpx: on a 2-core box the load generator shares the CPU with the server, so it must cost as
little as possible per request. This client keeps one connection per simulated user, writes a
prebuilt request, and parses only what it needs (status, Content-Length or chunked framing).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request


def build_post(path: str, body: dict, extra_headers: dict[str, str] | None = None) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    )
    for k, v in (extra_headers or {}).items():
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + data


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()

    async def _head(self) -> tuple[int, dict[bytes, bytes]]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
        return status, headers

    async def request(self, raw_request: bytes) -> tuple[int, bytes]:
        """One unary request; returns (status, body)."""
        self.writer.write(raw_request)
        status, headers = await self._head()
        length = int(headers.get(b"content-length", b"0"))
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    async def stream(self, raw_request: bytes) -> tuple[int, int, float]:
        """One streaming request; returns (status, lines received, seconds to the first line)."""
        start = time.perf_counter()
        self.writer.write(raw_request)
        status, headers = await self._head()
        first = None
        lines = 0
        if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
            length = int(headers.get(b"content-length", b"0"))
            data = await self.reader.readexactly(length) if length else b""
            return status, data.count(b"\n"), time.perf_counter() - start
        reader = self.reader
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readline()  # the empty trailer line
                break
            data = await reader.readexactly(size + 2)
            n = data.count(b"\n") - 1  # minus the CRLF that closes the chunk
            if n and first is None:
                first = time.perf_counter() - start
            lines += n
        return status, lines, first if first is not None else time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python <script> --serve ...`` in its own process group; stopped as a group on exit."""

    def __init__(self, script: str, args: list[str], port: int, start_timeout: float = 120.0) -> None:
        self.port = port
        self.start_timeout = start_timeout
        repo = os.path.dirname(os.path.dirname(os.path.abspath(script)))
        env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.log = open(os.devnull, "w") if os.environ.get("BENCH_QUIET") else None
        self.proc = subprocess.Popen(
            [sys.executable, script, "--serve", str(port), *args],
            env=env,
            start_new_session=True,
            stdout=self.log,
            stderr=subprocess.STDOUT if self.log else None,
        )

    def __enter__(self) -> ServerProcess:
        deadline = time.monotonic() + self.start_timeout
        url = f"http://127.0.0.1:{self.port}/ready"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before it was ready")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server not ready in time")
            time.sleep(0.05)  # polling the server's readiness, with a deadline

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM the whole group, wait up to 15 s, then SIGKILL what is left."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.log:
            self.log.close()


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far: to show the client is not the bottleneck."""
    t = os.times()
    return t.user + t.system

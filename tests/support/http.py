"""HTTP below the client library: raw bytes on a socket (for what an HTTP client cannot do — leave
mid-request, send garbage, stop half-way), and /metrics samples."""

from __future__ import annotations

import json
import socket

import httpx

RESET_ON_CLOSE = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends RST, no TIME_WAIT


def connect(port: int, timeout: float | None = None, reset_on_close: bool = False) -> socket.socket:
    """A socket connected to 127.0.0.1:``port``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if reset_on_close:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    return sock


def post_raw(port: int, body: dict) -> socket.socket:
    """Send a request on a raw socket and return it unread, so the test decides when the client leaves
    (a unary response has no headers until it is complete, so an HTTP client would block here)."""
    data = json.dumps(body).encode()
    sock = connect(port)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response (status, lower-cased headers, body by Content-Length) from ``sock``."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {buf!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read one HTTP response (without sending anything more), return it parsed."""
    with connect(port, timeout=timeout, reset_on_close=True) as s:
        s.sendall(data)
        return read_response(s)


def metric(client: httpx.Client, sample: str) -> float:
    """The value of the /metrics sample named exactly ``sample`` (labels included), 0 if absent."""
    for line in client.get("/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def status_count(client: httpx.Client, status: int, route: str = "/predict") -> float:
    """How many requests to ``route`` /metrics counts with ``status``."""
    return metric(client, f'litserve_requests_total{{route="{route}",status="{status}"}}')

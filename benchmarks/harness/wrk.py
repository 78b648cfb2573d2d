"""The ``predict`` workload: wrk posting ``{"input": 4.0}`` to ``/predict`` on N connections.

wrk runs one thread (``-t1``) so that, with ``--pin``, the load generator fits its one core; the
Lua script (post.lua) prints one ``BENCH_JSON`` line that is parsed instead of wrk's human output.
"""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path
from typing import Any

from .targets import CLIENT_CPU, HOST

LUA_SCRIPT = Path(__file__).resolve().parent.parent / "post.lua"
# Must match wrk.body in post.lua; the readiness probe also checks the answer.
REQUEST_BODY = b'{"input": 4.0}'
EXPECTED_OUTPUT = 16.0
WARMUP_S = 1
WRK_SOCKET_TIMEOUT = "5s"  # wrk's default of 2 s would turn slow answers into errors


def probe(port: int) -> bool:
    """One POST /predict; True only for a 200 carrying the right answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("POST", "/predict", body=REQUEST_BODY, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    except OSError:
        return False
    finally:
        conn.close()
    if resp.status != 200:
        return False
    try:
        correct = float(json.loads(body)["output"]) == EXPECTED_OUTPUT
    except (ValueError, KeyError, TypeError):
        correct = False
    if not correct:
        raise RuntimeError(f"wrong answer from target: {body!r}")
    return True


def run_wrk(port: int, connections: int, duration_s: int, pin: bool) -> dict[str, Any]:
    """Drive the target with wrk (1 thread, N connections) and parse post.lua's BENCH_JSON line."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={WRK_SOCKET_TIMEOUT}",
        "-s",
        str(LUA_SCRIPT),
        f"http://{HOST}:{port}/predict",
    ]
    if pin:
        cmd = ["taskset", "-c", str(CLIENT_CPU), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            break
    else:
        raise RuntimeError(f"no BENCH_JSON line in wrk output:\n{out.stdout}")
    secs = result["duration_us"] / 1e6
    result["requests_per_s"] = result["requests"] / secs if secs else 0.0
    result["errors_total"] = sum(result["errors"].values())
    result["latency_ms"] = {k: v / 1000 for k, v in result["latency_us"].items()}
    return result

"""Graceful drain on SIGTERM, and no orphans however the server ends (issue 4, items 7 and 8).

A real ``LitServer(...).run()`` in a subprocess of its own session, so its whole process group can be
found (and, whatever happens, killed). Its output goes to a file the test reads at the end: the API
key must never appear in it, the id of a request that failed must.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.poll import wait_for
from support.procs import group_pids, pid_alive
from support.servers import Proc

pytestmark = pytest.mark.slow  # each test starts a LitServer in a subprocess: seconds apiece

KEY = "drain-k3y-do-not-log-91c2"

SERVER = """
import sys
from apis_faults import FaultAPI
import litserve as ls

if __name__ == "__main__":
    port, grace = int(sys.argv[1]), float(sys.argv[2])
    server = ls.LitServer(FaultAPI(), accelerator="cpu", devices=1, workers_per_device=2, timeout=60,
                          shutdown_grace=grace, api_key=sys.argv[3])
    server.run(host="127.0.0.1", port=port, generate_client_file=False)
"""


@pytest.fixture
def start_server(tmp_path):
    """Start ``SERVER`` in a subprocess; returns it with a client that sends the key. Killed at the end."""
    with contextlib.ExitStack() as stack:

        def start(grace: float = 10.0) -> tuple[Proc, httpx.Client]:
            (tmp_path / "serve.py").write_text(SERVER)
            server = stack.enter_context(Proc.python(["serve.py", "{port}", str(grace), KEY], tmp_path))
            server.wait_http("/ready", timeout=60)
            client = httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": KEY})
            stack.callback(client.close)
            return server, client

        yield start


def post_in_thread(client: httpx.Client, body: dict, results: list) -> threading.Thread:
    def run() -> None:
        try:
            results.append(client.post("/predict", json=body))
        except Exception as exc:  # recorded, and asserted on by the test
            results.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_sigterm_drains_in_flight_then_stops_everything(start_server, tmp_path):
    server, client = start_server(grace=20)
    pids = [w["pid"] for w in client.get("/info").json()["workers"]]
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    failed = client.post("/predict", json={"op": "raise"}, headers={"X-Request-ID": "trace-raise-42"})
    assert failed.status_code == 500

    # Two requests in flight, one on each worker, held until the test opens their gates.
    gates = [tmp_path / "gate-a", tmp_path / "gate-b"]
    results: list = []
    threads = [post_in_thread(client, {"op": "block", "path": str(g)}, results) for g in gates]
    try:
        for g in gates:
            wait_for(Path(str(g) + ".started").exists)
        os.kill(server.pid, signal.SIGTERM)
        sent = time.monotonic()
        r = wait_for(lambda: (lambda r: r if r.status_code == 503 else None)(client.get("/ready")), timeout=5)
        not_ready_after = time.monotonic() - sent
        print(f"\n[drain] /ready answered 503 {not_ready_after * 1000:.0f} ms after SIGTERM")
        assert not_ready_after < 1.0
        assert r.json() == {"status": "not ready", "reason": "draining"}
        refused = client.post("/predict", json={"op": "echo"})
        assert refused.status_code == 503 and "draining" in refused.json()["detail"]
        assert refused.headers["retry-after"]
        assert client.get("/health").status_code == 200  # alive, just not taking work
        # Nothing in flight was cut short: the server waits for it.
        assert server.popen.poll() is None and not results
        assert all(pid_alive(p) for p in pids)
    finally:
        for g in gates:
            g.touch()
        for t in threads:
            t.join(30)
    assert [getattr(r, "status_code", r) for r in results] == [200, 200]
    assert all(r.json()["released"] for r in results)

    assert server.popen.wait(30) == 0
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10)
    wait_for(lambda: not group_pids(server.pid), timeout=10)  # no orphan, resource tracker included
    out = server.output()
    assert KEY not in out
    assert "trace-raise-42" in out  # the worker's error log names the request
    assert "draining" in out
    assert "did not stop" not in out and "killing it" not in out  # the workers stopped when told to


def test_sigterm_with_a_request_past_the_grace_still_answers_and_stops(start_server, tmp_path):
    server, client = start_server(grace=1)
    pids = [w["pid"] for w in client.get("/info").json()["workers"]]
    gate = tmp_path / "never"
    results: list = []
    t = post_in_thread(client, {"op": "block", "path": str(gate)}, results)
    try:
        wait_for(Path(str(gate) + ".started").exists)
        os.kill(server.pid, signal.SIGTERM)
        sent = time.monotonic()
        t.join(30)
        answered = time.monotonic() - sent
        rc = server.popen.wait(30)
        stopped = time.monotonic() - sent
    finally:
        gate.touch()
        t.join(30)
    print(
        f"\n[drain] request past shutdown_grace=1s answered after {answered:.2f}s, server exited after {stopped:.2f}s"
    )
    [r] = results
    assert isinstance(r, httpx.Response), r  # a response, not a dropped connection
    assert r.status_code == 503 and "shutting down" in r.json()["detail"]
    assert 1.0 <= answered < 3.0
    assert rc == 0 and stopped < 5.0
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10)
    wait_for(lambda: not group_pids(server.pid), timeout=10)
    assert KEY not in server.output()


def test_kill_9_of_the_server_workers_exit_by_themselves(start_server):
    server, client = start_server(grace=10)
    pids = [w["pid"] for w in client.get("/info").json()["workers"]]
    assert client.post("/predict", json={"op": "echo", "value": 1}).json()["value"] == 1
    os.kill(server.pid, signal.SIGKILL)  # the server only, not its group: nothing tells the workers
    killed = time.monotonic()
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10)
    print(f"\n[drain] workers gone {(time.monotonic() - killed) * 1000:.0f} ms after kill -9 of the server")
    wait_for(lambda: not group_pids(server.pid), timeout=10)
    assert KEY not in server.output()

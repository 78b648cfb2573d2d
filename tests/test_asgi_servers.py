"""The same app module under every common ASGI server: it answers, and SIGTERM leaves no process behind.

Under the servers whose stop goes through a signal handler in the process that runs the app
(uvicorn, gunicorn's uvicorn worker) the drain also shows: after SIGTERM ``/ready`` answers 503
while a request in flight finishes, before the listener closes. Under hypercorn and granian a request
in flight finishes too; daphne drops it (documented in docs/scale-out.md). hypercorn runs the app in daemonic
``multiprocessing`` workers (our workers start from there: ``core/spawn.py``); daphne sends no
lifespan events (the first request starts the workers).
"""

from __future__ import annotations

import importlib.util
import signal
import threading

import httpx
import pytest
from support.poll import wait_for
from support.procs import pid_alive
from support.servers import Proc

pytestmark = pytest.mark.slow

APP = "apis_deploy:app"

# name -> (arguments, /ready turns 503 before the listener closes, a request in flight finishes)
SERVERS = {
    "uvicorn": (["-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", "{port}"], True, True),
    "gunicorn": (
        [
            "-m",
            "gunicorn",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "-w",
            "1",
            "-b",
            "127.0.0.1:{port}",
            "--graceful-timeout",
            "30",
            APP,
        ],
        True,
        True,
    ),
    # Two daemonic workers: hypercorn's master terminates the busy one (twice) once the idle one exits.
    "hypercorn": (
        ["-m", "hypercorn", "--workers", "2", "--graceful-timeout", "30", "-b", "127.0.0.1:{port}", APP],
        False,
        True,
    ),
    "granian": (
        ["-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}", "--workers", "2", APP],
        False,
        True,
    ),
    "daphne": (["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", APP], False, False),
}


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(SERVERS))
def test_app_module_answers_and_sigterm_leaves_nothing(name, tmp_path):
    if not installed(name):
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    args, ready_503, finishes = SERVERS[name]
    with Proc.python(args, tmp_path) as proc:
        proc.wait_http("/health", timeout=60)
        # daphne sends no lifespan events: there the first request starts the workers (and waits for them).
        assert httpx.post(proc.url + "/predict", json={"value": -1}, timeout=60).status_code == 200
        assert httpx.get(proc.url + "/ready", timeout=10).status_code == 200
        seen: set[int] = set()
        for i in range(4):
            r = httpx.post(proc.url + "/predict", json={"value": i}, timeout=30)
            assert r.status_code == 200 and r.json()["value"] == i, r.text
            seen |= {r.json()["pid"], r.json()["ppid"]}  # model worker and the HTTP process that spawned it

        held: list = []
        mark = tmp_path / "in-flight"

        def post_held() -> None:
            try:
                held.append(
                    httpx.post(
                        proc.url + "/predict", json={"value": "slow", "sleep": 2, "mark": str(mark)}, timeout=30
                    ).status_code
                )
            except httpx.TransportError as exc:
                held.append(exc)

        t = threading.Thread(target=post_held)
        t.start()
        wait_for(mark.exists, timeout=10)
        proc.signal(signal.SIGTERM)
        if ready_503:
            # Not "connection refused": the listener is still open and says "not ready" while the request runs.
            r = wait_for(lambda: (lambda r: r if r.status_code == 503 else None)(httpx.get(proc.url + "/ready")), 5)
            assert r.json()["reason"] == "draining"
        t.join(30)
        if finishes:
            assert held == [200], f"{name} cut a request in flight short: {held}\n{proc.output()}"
        rc = proc.wait_exit(60)
        assert rc in (0, -signal.SIGTERM), f"{name} exited {rc}:\n{proc.output()}"
        proc.wait_group_gone(15)
        wait_for(lambda: not any(pid_alive(p) for p in seen), timeout=15)
        assert "Traceback" not in proc.output(), proc.output()

"""The model app inside other apps and servers: mounted in Starlette or FastAPI (lazy start on the
first request, or eager start in the host's lifespan), and served by ``uvicorn mod:app`` and by
``gunicorn -k uvicorn_worker.UvicornWorker -w 2 mod:app`` in subprocesses."""

from __future__ import annotations

import signal
import textwrap
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import fastapi
import httpx
import pytest
from apis_core import PidAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from support.poll import wait_for
from support.procs import all_gone, children, pid_alive
from support.servers import Proc, ThreadServer

import litserve as ls


def _model_app() -> ls.LitApp:
    return ls.create_app(PidAPI(), accelerator="cpu", devices=1, workers_per_device=1, timeout=20)


def _worker_pids(app: ls.LitApp) -> list[int]:
    return [w["pid"] for w in app.pool.workers_info() if w["pid"]]


async def hello(request):
    return PlainTextResponse("host")


@pytest.mark.parametrize("host_kind", ["starlette", "fastapi"])
def test_mounted_without_lifespan_starts_on_the_first_request(host_kind):
    model = _model_app()
    if host_kind == "starlette":
        host = Starlette(routes=[Route("/hello", hello)])
    else:
        host = fastapi.FastAPI()
        host.get("/hello")(lambda: PlainTextResponse("host"))
    host.mount("/model", model)
    pids: list[int] = []
    try:
        with ThreadServer(host) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/hello").text == "host"
            assert model.pool.state == "new"  # no lifespan event reached the mounted app
            assert client.get("/model/ready").status_code == 503
            r = client.post("/model/predict", json={"value": 7})
            assert r.status_code == 200, r.text
            assert r.json()["value"] == 7
            assert model.pool.state == "running"
            pids = _worker_pids(model)
            assert r.json()["pid"] in pids
            assert client.get("/model/ready").status_code == 200
            info = client.get("/model/info").json()
            assert [w["pid"] for w in info["workers"]] == pids
            assert client.post("/model/predict", json={"value": 8}).json()["value"] == 8
    finally:
        model.pool._kill_at_exit()  # what the interpreter's exit does for a pool nobody stopped
    assert pids
    all_gone(pids)


def test_concurrent_first_requests_share_one_start():
    model = _model_app()
    host = Starlette()
    host.mount("/model", model)
    try:
        with ThreadServer(host) as server, ThreadPoolExecutor(6) as ex:
            results = list(
                ex.map(lambda i: httpx.post(f"{server.url}/model/predict", json={"value": i}, timeout=30), range(6))
            )
            assert [r.status_code for r in results] == [200] * 6
            assert [r.json()["value"] for r in results] == list(range(6))
            assert len(model.pool.workers_info()) == 1
            pids = _worker_pids(model)
            assert {r.json()["pid"] for r in results} == set(pids)
    finally:
        model.pool._kill_at_exit()
    all_gone(pids)


def test_eager_start_in_the_host_lifespan():
    model = _model_app()

    @asynccontextmanager
    async def lifespan(app):
        async with model.running():
            yield

    host = Starlette(routes=[Route("/hello", hello)], lifespan=lifespan)
    host.mount("/model", model)
    with ThreadServer(host) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert model.pool.state == "running"  # before any request
        pids = _worker_pids(model)
        assert len(pids) == 1 and pid_alive(pids[0])
        assert client.get("/model/ready").status_code == 200
        r = client.post("/model/predict", json={"value": "eager"})
        assert r.status_code == 200 and r.json()["value"] == "eager" and r.json()["pid"] == pids[0]
    assert model.pool.state == "stopped"
    all_gone(pids)


def test_fastapi_host_lifespan_with_running():
    model = _model_app()

    @asynccontextmanager
    async def lifespan(app):
        async with model.running():
            yield

    host = fastapi.FastAPI(lifespan=lifespan)
    host.mount("/model", model)
    with ThreadServer(host) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert model.pool.state == "running"
        pids = _worker_pids(model)
        assert client.post("/model/predict", json={"value": 1}).json()["value"] == 1
    assert model.pool.state == "stopped"
    all_gone(pids)


MODULE = textwrap.dedent(
    """
    import litserve as ls
    from apis_core import PidAPI
    from starlette.applications import Starlette

    app = ls.create_app(PidAPI(), accelerator="cpu", devices=1, workers_per_device=1, timeout=20)

    host = Starlette()  # no lifespan: the mounted app starts on its first request
    host.mount("/model", ls.create_app(PidAPI(), accelerator="cpu", devices=1, workers_per_device=1))
    """
)


@pytest.fixture
def module_dir(tmp_path):
    (tmp_path / "lsmod.py").write_text(MODULE)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize(("target", "prefix"), [("lsmod:app", ""), ("lsmod:host", "/model")], ids=["app", "mounted"])
def test_uvicorn_subprocess(module_dir, target, prefix):
    args = ["-m", "uvicorn", target, "--host", "127.0.0.1", "--port", "{port}", "--log-level", "info"]
    with Proc.python(args, module_dir) as proc:
        proc.wait_http(prefix + "/health")
        r = httpx.post(proc.url + prefix + "/predict", json={"value": 42}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["value"] == 42 and body["ppid"] == proc.pid  # the worker is the HTTP process's child
        workers = [w["pid"] for w in httpx.get(proc.url + prefix + "/info", timeout=10).json()["workers"]]
        assert workers == [body["pid"]]
        proc.signal(signal.SIGTERM)
        code = proc.wait_exit(30)
        assert code in (0, -signal.SIGTERM), proc.output()  # uvicorn re-raises the signal it stopped on
        assert "Application shutdown complete" in proc.output()
        all_gone(workers)
        proc.wait_group_gone()


@pytest.mark.slow
def test_gunicorn_two_http_processes(module_dir, tmp_path):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    args = [
        "-m",
        "gunicorn",
        "-k",
        "uvicorn_worker.UvicornWorker",
        "-w",
        "2",
        "-b",
        "127.0.0.1:{port}",
        "--graceful-timeout",
        "20",
        "lsmod:app",
    ]
    with Proc.python(args, module_dir, env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}) as proc:
        proc.wait_http("/ready", timeout=60)
        wait_for(lambda: len(children(proc.pid)) == 2, timeout=30)
        http_pids = children(proc.pid)
        seen: dict[int, set[int]] = {}  # HTTP process -> its model workers that answered
        sent: list[int] = []

        def one(i: int) -> dict:
            sent.append(i)
            r = httpx.post(
                proc.url + "/predict", json={"value": i}, timeout=30, headers={"connection": "close"}
            )  # a new connection each time
            assert r.status_code == 200, r.text
            assert r.json()["value"] == i
            return r.json()

        def both_answered() -> bool:
            with ThreadPoolExecutor(8) as ex:
                for body in ex.map(one, range(16)):
                    seen.setdefault(body["ppid"], set()).add(body["pid"])
            return set(seen) == http_pids

        wait_for(both_answered, timeout=40, interval=0)
        workers = {pid for pids in seen.values() for pid in pids}
        assert len(workers) == 2  # one model worker per HTTP process, none shared
        # With PROMETHEUS_MULTIPROC_DIR, /metrics from either process counts both processes' requests.
        for _ in range(2):
            metrics = httpx.get(proc.url + "/metrics", timeout=30, headers={"connection": "close"}).text
            line = next(ln for ln in metrics.splitlines() if ln.startswith("litserve_requests_total{"))
            assert 'status="200"' in line and float(line.split()[-1]) == len(sent)
        proc.signal(signal.SIGTERM)
        code = proc.wait_exit(40)
        assert code == 0, proc.output()
        all_gone(workers | http_pids)
        proc.wait_group_gone()


def test_a_failed_lazy_start_says_why_and_is_tried_again(tmp_path, monkeypatch):
    from apis_faults import FaultAPI

    import litserve.core.pool

    fail = tmp_path / "fail"
    fail.write_text("")
    model = ls.create_app(FaultAPI(fail_path=str(fail)), accelerator="cpu")
    host = Starlette()
    host.mount("/model", model)
    monkeypatch.setattr(litserve.core.pool, "RETRY_START_AFTER", 30.0)
    try:
        with ThreadServer(host) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post("/model/predict", json={"op": "echo", "value": 1})
            assert r.status_code == 503
            assert "setup refused: the fail file exists" in r.json()["detail"]
            again = client.post("/model/predict", json={"op": "echo", "value": 1})
            assert again.status_code == 503 and int(again.headers["retry-after"]) > 1  # not retried yet
            assert "setup refused" in again.json()["detail"]
            fail.unlink()
            monkeypatch.setattr(litserve.core.pool, "RETRY_START_AFTER", 0.0)
            ok = client.post("/model/predict", json={"op": "echo", "value": 2})
            assert ok.status_code == 200 and ok.json()["value"] == 2
    finally:
        model.pool._kill_at_exit()

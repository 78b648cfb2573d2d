"""Several APIs in one server, and LitServe's constructor and run() surface.

The subprocess test serves a file written the way LitServe's docs write one (``import litserve as
ls``, the API classes in the server file, ``LitServer([...])``): each API has its own route, workers
and batching; the server has one port, one /health, /ready, /info and /metrics over both.
"""

from __future__ import annotations

import contextlib
import re
import signal
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from apis import SquareAPI
from starlette.testclient import TestClient
from support.poll import wait_for
from support.servers import Proc

import litserve as ls

SERVER = textwrap.dedent(
    """
    import os
    import sys

    import litserve as ls


    class SquareAPI(ls.LitAPI):
        def setup(self, device):
            self.model = lambda x: x**2

        def decode_request(self, request):
            return request["input"]

        def predict(self, x):
            return self.model(x)

        def encode_response(self, output):
            return {"output": output, "pid": os.getpid()}


    class CubeAPI(ls.LitAPI):
        def setup(self, device):
            self.model = lambda xs: [x**3 for x in xs]

        def decode_request(self, request):
            return request["input"]

        def predict(self, xs):
            return {"outputs": self.model(xs), "batch": len(xs)}

        def unbatch(self, output):
            return [(y, output["batch"]) for y in output["outputs"]]

        def encode_response(self, output):
            return {"output": output[0], "batch": output[1], "pid": os.getpid()}


    if __name__ == "__main__":
        square = SquareAPI(api_path="/square")
        cube = CubeAPI(api_path="/cube", max_batch_size=4, batch_timeout=0.05)
        server = ls.LitServer(
            [square, cube],
            accelerator="cpu",
            workers_per_device={"/square": 2, "/cube": 1},
            model_metadata={"name": "arith", "version": 2},
        )
        server.run(port=int(sys.argv[1]), num_api_servers=2, generate_client_file=False, no_such_option=1)
    """
)


@pytest.mark.slow  # starts a LitServer with three workers in a subprocess
def test_two_apis_in_one_server_each_with_its_own_workers_and_batching(tmp_path):
    (tmp_path / "server.py").write_text(SERVER)
    with Proc.python(["server.py", "{port}"], tmp_path) as proc:
        proc.wait_http("/ready", timeout=60)
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            assert client.get("/health").status_code == 200
            square = client.post("/square", json={"input": 3})
            assert square.status_code == 200 and square.json()["output"] == 9
            assert client.post("/predict", json={"input": 3}).status_code == 404  # no default route

            # The cube API goes through its batch path (predict gets a list, unbatch splits it).
            with ThreadPoolExecutor(4) as ex:
                cubes = list(ex.map(lambda x: client.post("/cube", json={"input": x}).json(), range(4)))
            assert [c["output"] for c in cubes] == [0, 1, 8, 27]
            assert all(1 <= c["batch"] <= 4 for c in cubes)

            info = client.get("/info").json()
            apis = {a["path"]: a for a in info["apis"]}
            assert set(apis) == {"/square", "/cube"}
            assert len(apis["/square"]["workers"]) == 2 and len(apis["/cube"]["workers"]) == 1
            assert (
                apis["/cube"]["settings"]["max_batch_size"] == 4 and apis["/square"]["settings"]["max_batch_size"] == 1
            )
            assert info["model"] == {"name": "arith", "version": 2}
            square_pids = {w["pid"] for w in apis["/square"]["workers"]}
            cube_pids = {w["pid"] for w in apis["/cube"]["workers"]}
            assert not square_pids & cube_pids  # each API its own processes
            assert square.json()["pid"] in square_pids and cubes[0]["pid"] in cube_pids

            metrics = client.get("/metrics").text
            assert 'litserve_requests_total{route="/square",status="200"} 1.0' in metrics
            assert 'litserve_requests_total{route="/cube",status="200"} 4.0' in metrics
            assert 'litserve_workers_ready{route="/square"} 2.0' in metrics
            assert 'litserve_workers_ready{route="/cube"} 1.0' in metrics

        output = proc.output()
        # the start banner says whose worker each line is: both APIs count from worker-0
        for path, pids in (("/square", square_pids), ("/cube", cube_pids)):
            for pid in pids:
                assert re.search(rf"worker-\d\s+cpu /{path[1:]}\s+pid {pid}\b", output), (path, pid, output)
        assert "num_api_servers=2 is ignored" in output
        assert "no_such_option=1" in output and "ignored" in output
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(40) == 0
        proc.wait_group_gone()


class _Cube(ls.LitAPI):
    def predict(self, x):
        return x


def test_legacy_server_model_settings_are_forwarded_with_a_warning():
    api = SquareAPI()
    with pytest.warns(DeprecationWarning) as record:
        server = ls.LitServer(api, accelerator="cpu", max_batch_size=4, batch_timeout=0.02, api_path="/v1/sq")
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 3, messages  # one per forwarded setting, each naming where it goes now
    for name, message in zip(("api_path", "batch_timeout", "max_batch_size"), messages, strict=True):
        assert message.startswith(f"{name}= on the server is deprecated") and f"LitAPI({name}=...)" in message
    assert (api.max_batch_size, api.batch_timeout, api.api_path) == (4, 0.02, "/v1/sq")
    assert [e.path for e in server.app.endpoints] == ["/v1/sq"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # LitServe's defaults (stream=False, batch_timeout=0.0) warn nothing
        ls.LitServer(SquareAPI(), accelerator="cpu", stream=False)
    with pytest.raises(ls.ConfigurationError, match="each LitAPI"):
        ls.LitServer([SquareAPI(api_path="/a"), _Cube(api_path="/b")], accelerator="cpu", max_batch_size=2)


def test_apis_need_their_own_paths_and_instances():
    with pytest.raises(ls.ConfigurationError, match="share api_path '/predict'"):
        ls.create_app([SquareAPI(), _Cube()], accelerator="cpu")
    api = SquareAPI(api_path="/a")
    with pytest.raises(ls.ConfigurationError, match="listed twice"):
        ls.create_app([api, api], accelerator="cpu")
    with pytest.raises(ls.ConfigurationError, match="taken by a probe"):
        ls.create_app(SquareAPI(api_path="/health"), accelerator="cpu")
    with pytest.raises(ls.ConfigurationError, match="empty list"):
        ls.create_app([], accelerator="cpu")


def test_probe_paths_and_metadata_are_settings():
    app = ls.create_app(
        SquareAPI(), accelerator="cpu", healthcheck_path="/healthz", info_path="/about", model_metadata={"v": 1}
    )
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/health").status_code == 404
        about = client.get("/about").json()
        assert about["model"] == {"v": 1} and about["apis"][0]["path"] == "/predict"
        assert client.post("/predict", json={"input": 2}).json() == {"output": 4}


@pytest.mark.slow
def test_several_apis_mounted_in_a_host_app_start_with_its_lifespan():
    """The multi-API app inside FastAPI: the host's lifespan starts and stops every API's workers."""
    from fastapi import FastAPI

    model_app = ls.create_app([SquareAPI(api_path="/square"), _Cube(api_path="/echo")], accelerator="cpu")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with model_app.running():
            yield

    host = FastAPI(lifespan=lifespan)
    host.mount("/models", model_app)
    with TestClient(host) as client:
        assert client.post("/models/square", json={"input": 5}).json() == {"output": 25}
        assert client.post("/models/echo", json={"a": 1}).json() == {"a": 1}
        wait_for(lambda: client.get("/models/ready").status_code == 200)
    assert all(pool.state == "stopped" for pool in model_app.pools)


def test_run_warns_about_options_it_cannot_use(monkeypatch):
    """run() accepts LitServe's options; those without meaning here warn, unknown ones never reach uvicorn."""
    from litserve import server as server_module

    seen = {}

    def fake_run_uvicorn(app, host, port, **options):
        seen.update(options, port=port)
        return 0

    monkeypatch.setattr(server_module, "run_uvicorn", fake_run_uvicorn)
    monkeypatch.setattr(server_module.checks, "bind_port", lambda host, port: "the bound socket")
    server = ls.LitServer(SquareAPI(), accelerator="cpu")
    with pytest.warns(UserWarning) as caught:
        server.run(
            port=8123,
            num_api_servers=4,
            generate_client_file=False,
            api_server_worker_type="process",
            pretty_logs=True,
            workers=3,
            made_up=1,
            timeout_keep_alive=7,
        )
    messages = " | ".join(str(w.message) for w in caught)
    for name in ("num_api_servers=4", "api_server_worker_type='process'", "pretty_logs", "workers=3", "made_up=1"):
        assert name in messages
    assert seen == {"timeout_keep_alive": 7, "log_level": 20, "port": 8123, "sock": "the bound socket"}

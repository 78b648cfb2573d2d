"""Day-one mistakes fail early, in one line that names the fix: an unpicklable attribute set in
``__init__``, an API class defined where workers cannot import it, a misspelled hook, a busy port,
a ``KeyError`` on a missing field, and Lightning's LitServe installed beside this project."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import httpx
import pytest
from support.servers import Proc, ThreadServer

import litserve as ls
from litserve import checks


class LockInInit(ls.LitAPI):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()

    def predict(self, x):
        return x


class Misspelled(ls.LitAPI):
    def set_up(self, device):
        self.model = lambda x: x

    def decode_requests(self, request):
        return request

    def predict(self, x):
        return x

    def tokenize(self, text):  # an ordinary helper: no warning
        return text.split()

    def batched(self, xs):  # close to batch, but a plausible name of its own
        return xs


class FieldAPI(ls.LitAPI):
    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return {"a": 1}[x]  # a KeyError that is the model's, not the request's


def test_an_unpicklable_attribute_fails_at_litserver_in_one_line_naming_it():
    with pytest.raises(ls.ConfigurationError) as info:
        ls.LitServer(LockInInit(), accelerator="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "LockInInit.lock" in message and "create it in setup" in message


def test_an_api_defined_in_python_c_says_it_must_live_in_an_importable_file(tmp_path: Path):
    code = (
        "import litserve as ls\n"
        "class MyAPI(ls.LitAPI):\n"
        "    def predict(self, x):\n"
        "        return x\n"
        "ls.LitServer(MyAPI(), accelerator='cpu')\n"
    )
    with Proc.python(["-c", code], tmp_path) as proc:
        code_ = proc.wait_exit(60)
        out = proc.output()
    assert code_ != 0
    assert "MyAPI is defined in an interactive session" in out and "importable file" in out, out


def test_a_class_defined_in_a_function_is_refused():
    def make():
        class Local(ls.LitAPI):
            def predict(self, x):
                return x

        return Local()

    with pytest.raises(ls.ConfigurationError, match="inside a function"):
        ls.create_app(make(), accelerator="cpu")


def test_misspelled_hooks_get_a_did_you_mean_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="litserve"):
        ls.create_app(Misspelled(), accelerator="cpu")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Misspelled.set_up" in w and "did you mean setup()" in w for w in warnings), warnings
    assert any("Misspelled.decode_requests" in w and "did you mean decode_request()" in w for w in warnings)
    assert not any("tokenize" in w or "batched" in w for w in warnings), warnings


def test_a_keyerror_on_a_missing_field_is_a_422_naming_it():
    app = ls.create_app(FieldAPI(), accelerator="cpu", timeout=20)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/predict", json={"inputs": "a"})
        assert r.status_code == 422, r.text
        assert "'input'" in r.text and "Field required" in r.text
        r = client.post("/predict", data={"inputs": "a"})  # a form body lacking the field: the same 422
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "input"]
        assert "Content-Type" not in r.json()["detail"][0]["msg"]  # a real form: no hint about JSON
        # JSON sent with curl -d's default Content-Type (a form): the 422 says how to send JSON
        form_type = {"content-type": "application/x-www-form-urlencoded"}
        r = client.post("/predict", content=b'{"input": "a", "q": "x=y&z"}', headers=form_type)
        assert r.status_code == 422, r.text
        msg = r.json()["detail"][0]["msg"]
        assert "request['input']" in msg and "Content-Type: application/json" in msg, msg
        assert client.post("/predict", json={"input": "a"}).json() == 1
        # a KeyError raised by the model, not by reading the request, is still the server's fault
        r = client.post("/predict", json={"input": "b"})
        assert r.status_code == 500


def test_a_form_posted_to_a_pydantic_api_is_a_415_that_says_how_to_send_json():
    from apis import PydanticAPI

    app = ls.create_app(PydanticAPI(), accelerator="cpu", timeout=20)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post(
            "/predict", content=b'{"input": 3}', headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 415, r.text
        assert "Content-Type: application/json" in r.json()["detail"] and "curl -d" in r.json()["detail"]
        assert client.post("/predict", json={"input": 3}).json() == {"output": 9.0}


def test_a_busy_port_fails_in_one_line_before_any_worker_starts(tmp_path: Path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    script = tmp_path / "serve.py"
    script.write_text(
        "import sys\nimport litserve as ls\nfrom apis import SquareAPI\n"
        "if __name__ == '__main__':\n"
        "    ls.LitServer(SquareAPI(), accelerator='cpu').run(host='127.0.0.1', port=int(sys.argv[1]))\n"
    )
    try:
        with Proc.python([str(script), str(port)], tmp_path) as proc:
            code = proc.wait_exit(60)
            lines = proc.output().strip().splitlines()
            assert code == 1
            assert lines == [
                f"ERROR:    litserve: port {port} is already in use on 127.0.0.1: stop the process holding it, "
                "or pass another port to run(port=...)"
            ]
            assert not (tmp_path / "client.py").exists()  # nothing happened before the check
    finally:
        holder.close()


@pytest.mark.parametrize(
    "tail",
    [
        "ls.LitServer(SquareAPI(), accelerator='cpu').run(host='127.0.0.1', port=0)\n",
        "def main():\n    ls.LitServer(SquareAPI(), accelerator='cpu').run(host='127.0.0.1', port=0)\n\n\nmain()\n",
    ],
    ids=["run", "main"],
)
def test_run_outside_the_main_guard_fails_in_one_line_before_any_worker_starts(tmp_path: Path, tail: str):
    """Without the guard every spawned worker would start a server too; said in one line naming the line,
    instead of multiprocessing's "bootstrapping phase" traceback from each process."""
    script = tmp_path / "serve.py"
    script.write_text("import litserve as ls\nfrom apis import SquareAPI\n\n" + tail)
    line = 4 if tail.startswith("ls.") else 8
    with Proc.python([str(script)], tmp_path) as proc:
        assert proc.wait_exit(60) == 1
        assert proc.output().strip().splitlines() == [
            f"ERROR:    litserve: serve.py:{line} starts the server at the top level of the script: the workers are "
            'spawned processes that import serve.py again, so start it under `if __name__ == "__main__":`'
        ]
    assert not (tmp_path / "client.py").exists()  # nothing happened before the check
    # a file that is no script's top level is not judged: the guard it has is found
    guarded = tmp_path / "guarded.py"
    guarded.write_text("x = 1\nif __name__ == '__main__':\n    y = 2\n")
    assert not checks._unguarded(str(guarded), 3) and checks._unguarded(str(guarded), 1)
    assert not checks._unguarded("<stdin>", 1)


def test_bind_port_names_the_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(checks.PortInUse, match=f"port {port} is already in use"):
            checks.bind_port("127.0.0.1", port)
    free = checks.bind_port("127.0.0.1", 0)
    free.close()
    for bad in (99999, -1, "http", 8000.0, True, None):  # one line each, never an OverflowError traceback
        with pytest.raises(checks.PortInUse, match=f"cannot listen on port {bad!r}: a port is a number from 0"):
            checks.bind_port("127.0.0.1", bad)  # type: ignore[arg-type]
    assert checks.port_number("8000") == 8000  # as LitServe takes it, from an environment variable


def test_lightnings_litserve_installed_beside_is_named(tmp_path: Path, monkeypatch, caplog):
    dist = tmp_path / "litserve-0.2.19.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: litserve\nVersion: 0.2.19\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    checks.other_litserve.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="litserve"):
            ls.create_app(FieldAPI(), accelerator="cpu")
        text = caplog.text
        assert "'litserve' 0.2.19" in text and "pip uninstall litserve, then reinstall litserve-zmq" in text
    finally:
        checks.other_litserve.cache_clear()


def test_a_failed_start_is_said_once_in_the_error_body(tmp_path: Path):
    """No repeated prefixes: "could not start" appears once, then the cause, without a traceback."""
    from apis_faults import FaultAPI
    from starlette.applications import Starlette

    fail = tmp_path / "fail"
    fail.write_text("")
    model = ls.create_app(FaultAPI(fail_path=str(fail)), accelerator="cpu")
    host = Starlette()
    host.mount("/model", model)
    try:
        with ThreadServer(host) as server:
            r = httpx.post(server.url + "/model/predict", json={"op": "echo", "value": 1}, timeout=30)
    finally:
        model.pool._kill_at_exit()
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert detail.count("could not start") == 1, detail
    assert "setup refused: the fail file exists" in detail
    assert "Traceback" not in detail and 'File "' not in detail


def test_cuda_without_a_gpu_suggests_auto_or_cpu():
    from litserve.devices import resolve_devices

    with pytest.raises(ls.ConfigurationError) as info:
        resolve_devices("cuda", cuda_count=0)
    assert "accelerator='auto'" in str(info.value) and "accelerator='cpu'" in str(info.value)

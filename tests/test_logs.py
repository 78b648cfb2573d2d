"""What the logs say at start, in one format, however the app is served: ``LitServer.run``,
``uvicorn mod:app``, gunicorn, and mounted in a host app; and what ``LitServer.run`` says about the
``client.py`` it writes (or leaves alone)."""

from __future__ import annotations

import re
import signal
import textwrap
from pathlib import Path

import httpx
import pytest
from support.poll import wait_for
from support.servers import Proc

import litserve as ls

pytestmark = pytest.mark.slow  # each test starts servers in subprocesses

# Every line litserve writes: uvicorn's level prefix, then "litserve", and a worker's name and pid.
LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):\s+litserve( worker-\d+\[\d+\])?: \S")

MODULE = textwrap.dedent(
    """
    import sys
    from contextlib import asynccontextmanager

    import litserve as ls
    from apis import SquareAPI
    from starlette.applications import Starlette

    app = ls.create_app(SquareAPI(), accelerator="cpu", devices=1, workers_per_device=2, timeout=20)

    model = ls.create_app(SquareAPI(), accelerator="cpu", devices=1, workers_per_device=2, timeout=20)

    @asynccontextmanager
    async def lifespan(host):
        async with model.running():
            yield

    host = Starlette(lifespan=lifespan)
    host.mount("/model", model)

    if __name__ == "__main__":
        workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
        ls.LitServer(SquareAPI(), accelerator="cpu", devices=1, workers_per_device=workers, timeout=20).run(
            host="127.0.0.1", port=int(sys.argv[1])
        )
    """
)

WAYS = {
    "LitServer.run": (["lsmod.py", "{port}"], ""),
    "uvicorn": (["-m", "uvicorn", "lsmod:app", "--host", "127.0.0.1", "--port", "{port}"], ""),
    # uvicorn's own (deprecated) worker class here, uvicorn-worker's in test_mounting and test_asgi_servers
    "gunicorn": (["-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-b", "127.0.0.1:{port}", "lsmod:app"], ""),
    "mounted": (["-m", "uvicorn", "lsmod:host", "--host", "127.0.0.1", "--port", "{port}"], "/model"),
}


def litserve_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "litserve" in line and "lsmod" not in line]


@pytest.mark.parametrize("way", list(WAYS))
def test_the_start_banner_is_the_same_whichever_way_the_app_is_served(tmp_path: Path, way: str):
    (tmp_path / "lsmod.py").write_text(MODULE)
    args, prefix = WAYS[way]
    with Proc.python(args, tmp_path) as proc:
        proc.wait_http(prefix + "/ready", timeout=60)
        workers = httpx.get(proc.url + prefix + "/info", timeout=10).json()["workers"]
        # a request that fails in the worker: its traceback is logged there, in the same format
        assert httpx.post(proc.url + prefix + "/predict", json={"input": "x"}, timeout=10).status_code == 500
        wait_for(lambda: "predict raised" in proc.output(), timeout=20)
        out = proc.output()
        lines = litserve_lines(out)

        banner = next(line for line in lines if "SquareAPI ready" in line)
        assert "POST /predict" in banner and "/docs" in banner and "/health" in banner, banner
        if way == "LitServer.run":
            assert f"at http://127.0.0.1:{proc.port}" in banner
            assert any(f"listening on http://127.0.0.1:{proc.port}" in line for line in lines)
        assert any("API key: off" in line for line in lines)
        for w in workers:  # each worker exactly once, with its device and pid
            mentions = [line for line in lines if re.search(rf"\b{w['name']}\s+cpu\s+pid {w['pid']}\b", line)]
            assert len(mentions) == 1, lines
        worker_lines = [line for line in lines if re.match(r"^\w+:\s+litserve worker-\d+\[\d+\]: ", line)]
        assert any("predict raised" in line for line in worker_lines), lines
        for line in lines:  # one format for all of them (tracebacks are indented continuation lines)
            if not line.startswith((" ", "Traceback", "TypeError")):
                assert LINE.match(line), f"not in litserve's format: {line!r}\n{out}"
        proc.signal(signal.SIGTERM)
        proc.wait_exit(40)


class _Prompted(ls.LitAPI):
    def decode_request(self, request):
        return request["prompt"], request.get("max_tokens", 8), request["prompt"]

    def predict(self, x):
        yield x


class _ReadsInPredict(ls.LitAPI):  # LitServe's README: no decode_request, predict reads the body
    def predict(self, request):
        return {"output": request["input"] ** 2}


class _ReadsNothing(ls.LitAPI):
    def predict(self, x):
        return x


def test_client_files_sample_has_the_keys_the_api_reads():
    """client.py posts what the API reads (a streaming LLM's "prompt"), not always {"input": 4.0}."""
    from apis import PydanticAPI, SquareAPI

    from litserve.core.client_file import sample_request

    assert sample_request(_Prompted()) == {"prompt": "hello", "max_tokens": 4.0}
    assert sample_request(_ReadsInPredict()) == {"input": 4.0}
    assert sample_request(SquareAPI()) == {"input": 4.0}
    assert sample_request(_ReadsNothing()) == {"input": 4.0}
    assert sample_request(PydanticAPI()) == {"input": 4.0}  # from its request model


def test_client_file_without_a_server_says_so_in_two_lines(tmp_path: Path):
    """Run before the server (or after it stopped), client.py says what to do, not a URLError traceback."""
    import socket
    import subprocess
    import sys

    from litserve.core.client_file import write_client_file

    with socket.socket() as bound:  # bound, never listening: a connection to it is refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        client = write_client_file("127.0.0.1", port, "/predict", {"input": 4.0}, path=str(tmp_path / "client.py"))
        assert client is not None
        run = subprocess.run([sys.executable, client], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and run.stdout == "", run.stdout + run.stderr
    reach, hint = run.stderr.splitlines()
    assert reach.startswith(f"Cannot reach http://127.0.0.1:{port}/predict: ") and "Connection refused" in reach
    assert hint == "Is the server running? Start it, wait for its 'listening on' line, then try again."


def test_client_file_is_written_then_kept_when_it_is_the_users(tmp_path: Path):
    # one worker ("1"): client.py is the app process's business
    (tmp_path / "lsmod.py").write_text(MODULE)
    with Proc.python(["lsmod.py", "{port}", "1"], tmp_path) as proc:
        proc.wait_http("/ready", timeout=60)
        client = tmp_path / "client.py"
        assert f"wrote {client}" in proc.output()
        assert f"http://127.0.0.1:{proc.port}/predict" in client.read_text()
        proc.signal(signal.SIGTERM)
        proc.wait_exit(40)

    # litserve's own file is rewritten (the port changed); the log says so
    with Proc.python(["lsmod.py", "{port}", "1"], tmp_path) as proc:
        proc.wait_http("/ready", timeout=60)
        assert f"http://127.0.0.1:{proc.port}/predict" in client.read_text()
        assert f"wrote {client}" in proc.output()
        proc.signal(signal.SIGTERM)
        proc.wait_exit(40)

    mine = "print('my own client')\n"
    client.write_text(mine)
    with Proc.python(["lsmod.py", "{port}", "1"], tmp_path) as proc:
        proc.wait_http("/ready", timeout=60)
        assert client.read_text() == mine
        assert f"{client} exists and litserve did not write it: left it unchanged" in proc.output()
        proc.signal(signal.SIGTERM)
        proc.wait_exit(40)

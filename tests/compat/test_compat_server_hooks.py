"""LitServe's server-side hooks, each from a server file written as LitServe's docs write it:
``LitAPI.health``, ``LitAPI.authorize``, ``callbacks=``, ``loggers=``, ``middlewares=``."""

from __future__ import annotations

import httpx
import pytest
from serving import serve_file
from support.poll import wait_for

pytestmark = pytest.mark.slow  # each test serves a file in a subprocess


def test_health_answers_plain_ok_and_consults_the_api(tmp_path):
    with serve_file("health_hook.py", tmp_path) as proc:
        r = httpx.get(proc.url + "/health")
        assert (r.status_code, r.text) == (200, "ok")
        (tmp_path / "maintenance").touch()
        r = httpx.get(proc.url + "/health")
        assert (r.status_code, r.text) == (503, "not ready")
        (tmp_path / "maintenance").unlink()
        assert httpx.get(proc.url + "/health").text == "ok"
        assert httpx.post(proc.url + "/predict", json={"input": 3}).json() == {"output": 9}


def test_authorize_bearer_token(tmp_path):
    with serve_file("auth_bearer.py", tmp_path) as proc:
        url = proc.url + "/predict"
        good = httpx.post(url, json={"input": 4.0}, headers={"Authorization": "Bearer 1234"})
        assert good.status_code == 200 and good.json() == {"output": 16.0}
        bad = httpx.post(url, json={"input": 4.0}, headers={"Authorization": "Bearer 9999"})
        assert bad.status_code == 401 and bad.json() == {"detail": "Bad token"}
        missing = httpx.post(url, json={"input": 4.0})
        assert missing.status_code in (401, 403)  # FastAPI's HTTPBearer: 403 before 0.115, 401 after
        assert missing.json() == {"detail": "Not authenticated"}


def test_callbacks_run_in_the_worker_and_the_server(tmp_path):
    with serve_file("callbacks_timing.py", tmp_path) as proc:
        r = httpx.post(proc.url + "/predict", json={"input": 2.0})
        assert r.status_code == 200 and r.json() == {"output": 4.0}

        def seen():
            out = proc.output()
            return all(
                line in out
                for line in (
                    "server start",
                    "before setup SimpleLitAPI",
                    "after setup SimpleLitAPI",
                    "before decode_request",
                    "Prediction took 0.00 seconds",
                    "after encode_response",
                    "request",
                    "response",
                )
            )

        wait_for(seen, timeout=20)
        out = proc.output()
        assert out.index("server start") < out.index("before setup SimpleLitAPI") < out.index("after setup")
        assert out.index("before decode_request") < out.index("Prediction took") < out.index("after encode_response")


def test_loggers_receive_what_the_api_logs(tmp_path):
    with serve_file("loggers_file.py", tmp_path) as proc:
        for x in (1.0, 2.0, 3.0):
            assert httpx.post(proc.url + "/predict", json={"input": x}).json() == {"output": x * x}
        log = tmp_path / "test_logger_temp.txt"
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 3, timeout=20)
        assert sorted(log.read_text().splitlines()) == ["input: 1.0", "input: 2.0", "input: 3.0"]


def test_middlewares_wrap_the_app(tmp_path):
    with serve_file("middlewares_custom.py", tmp_path) as proc:
        r = httpx.post(proc.url + "/predict", json={"input": 500}, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200 and r.json() == {"output": "x" * 500}
        assert r.headers["content-encoding"] == "gzip"
        assert len(r.headers["x-trace-id"]) == 5
        small = httpx.get(proc.url + "/health")
        assert small.text == "ok" and len(small.headers["x-trace-id"]) == 5  # every route is wrapped


def test_authorize_guards_a_spec_route_too(tmp_path):
    with serve_file("openai_authorized.py", tmp_path) as proc:
        url = proc.url + "/v1/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = httpx.post(url, json=body, headers={"Authorization": "Bearer secret"}, timeout=30)
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "echo: hi"


def test_loggers_can_mount_an_app_and_all_receive_each_entry(tmp_path):
    with serve_file("loggers_mount.py", tmp_path) as proc:
        for text in ("a b", "c d e"):
            assert httpx.post(proc.url + "/predict", json={"text": text}).status_code == 200
        wait_for(lambda: httpx.get(proc.url + "/log-counts/").text == "words 5\n", timeout=20)
        wait_for(lambda: "logged words=2" in proc.output() and "logged words=3" in proc.output(), timeout=20)


def test_hooks_with_several_apis_in_one_server(tmp_path):
    with serve_file("multi_api_hooks.py", tmp_path) as proc:
        assert httpx.post(proc.url + "/square", json={"input": 3}).json() == {"output": 9, "input": 3}
        assert httpx.post(proc.url + "/cube", json={"input": 2}).json() == {"output": 8}
        assert httpx.get(proc.url + "/health").text == "ok"
        wait_for(lambda: "log cube_input=2" in proc.output(), timeout=20)
        wait_for(lambda: proc.output().count("request seen") == 2, timeout=20)

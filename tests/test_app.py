"""The status table and the seed's promises, through real HTTP and real spawned workers."""

from __future__ import annotations

import json

import httpx
import pytest
from apis import BehaviourAPI, PredictRequest, PydanticAPI, SquareAPI
from support.servers import ThreadServer

import litserve as ls


@pytest.fixture(scope="module")
def square():
    app = ls.create_app(SquareAPI(), accelerator="cpu", timeout=10)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def behaviour():
    app = ls.create_app(
        BehaviourAPI(), accelerator="cpu", devices=1, workers_per_device=2, timeout=10, max_payload_size="1KB"
    )
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_seed_example_squares(square):
    r = square.post("/predict", json={"input": 4.0})
    assert r.status_code == 200
    assert r.json() == {"output": 16.0}
    assert r.headers["content-type"] == "application/json"
    assert len(r.headers["x-request-id"]) >= 16


def test_malformed_json_is_400(square):
    r = square.post("/predict", content=b'{"input": 4', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["detail"]


def test_empty_body_is_400(square, pydantic_server):
    for client in (square, pydantic_server):  # parsed in the worker, and in the server against the model
        r = client.post("/predict", content=b"")
        assert r.status_code == 400
        assert r.json() == {"detail": "the body is empty: send a JSON value, with Content-Type: application/json"}


def test_user_exception_is_500_and_worker_lives(behaviour):
    r = behaviour.post("/predict", json={"op": "raise"})
    assert r.status_code == 500
    assert r.json() == {"detail": "ValueError: the model refused this input"}
    for _ in range(4):
        assert behaviour.post("/predict", json={"op": "echo", "value": 1}).status_code == 200


def test_http_exception_keeps_status_and_detail(behaviour):
    r = behaviour.post("/predict", json={"op": "http", "status": 418})
    assert r.status_code == 418
    assert r.json() == {"detail": "custom detail"}


def test_http_exception_detail_may_be_any_json_value(behaviour):
    detail = {"reason": "quota", "limits": [1, 2]}
    r = behaviour.post("/predict", json={"op": "http", "status": 429, "detail": detail})
    assert r.status_code == 429 and r.json() == {"detail": detail}


def test_http_exception_headers_reach_the_client_except_framing_ones(behaviour):
    headers = {
        "WWW-Authenticate": 'Bearer realm="model"',
        "Retry-After": "7",
        "Content-Length": "0",  # framing stays the server's
        "X-Request-ID": "spoofed",
        "Bad Name": "x",
        "X-Injected": "a\r\nSet-Cookie: evil=1",
    }
    r = behaviour.post("/predict", json={"op": "http", "status": 401, "headers": headers})
    assert r.status_code == 401 and r.json() == {"detail": "custom detail"}
    assert r.headers["www-authenticate"] == 'Bearer realm="model"'
    assert r.headers["retry-after"] == "7"
    assert r.headers["x-request-id"] != "spoofed"
    assert "x-injected" not in r.headers and "set-cookie" not in r.headers
    assert int(r.headers["content-length"]) == len(r.content)


def test_unserialisable_output_is_500_with_reason(behaviour):
    r = behaviour.post("/predict", json={"op": "bad_output"})
    assert r.status_code == 500
    assert "serialize" in r.json()["detail"].lower() or "serialise" in r.json()["detail"].lower()


def test_body_too_large_is_413(behaviour):
    r = behaviour.post("/predict", json={"op": "echo", "value": "x" * 2000})
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]


def test_chunked_body_too_large_is_413(behaviour):
    def chunks():
        for _ in range(10):
            yield b"x" * 200

    r = behaviour.post("/predict", content=chunks())
    assert r.status_code == 413


def test_request_id_is_echoed_or_generated(behaviour):
    r = behaviour.post("/predict", json={"op": "echo"}, headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    bad = behaviour.post("/predict", json={"op": "echo"}, headers={"x-request-id": "has spaces"})
    assert bad.headers["x-request-id"] != "has spaces"


def test_two_workers_share_the_load(behaviour):
    pids = {behaviour.post("/predict", json={"op": "echo"}).json()["pid"] for _ in range(20)}
    assert len(pids) == 2


def test_setup_receives_the_device(behaviour):
    assert behaviour.post("/predict", json={"op": "echo"}).json()["device"] == "cpu"


def test_get_on_model_route_is_405(square):
    assert square.get("/predict").status_code == 405


def test_health_ready_info(behaviour):
    health = behaviour.get("/health")
    assert (health.status_code, health.text) == (200, "ok")  # LitServe's plain body
    r = behaviour.get("/ready")
    assert r.status_code == 200 and r.json()["workers_ready"] == 2
    info = behaviour.get("/info").json()
    assert [w["device"] for w in info["workers"]] == ["cpu", "cpu"]
    assert all(w["state"] == "ready" and w["pid"] for w in info["workers"])
    assert info["settings"]["timeout"] == 10


@pytest.fixture(scope="module")
def pydantic_server():
    app = ls.create_app(PydanticAPI(), accelerator="cpu")
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_pydantic_valid_request(pydantic_server):
    r = pydantic_server.post("/predict", json={"input": 3})
    assert r.status_code == 200
    assert r.json() == {"output": 9.0}  # serialised through the response model: extra key dropped


def test_pydantic_schema_mismatch_is_422_naming_the_field(pydantic_server):
    r = pydantic_server.post("/predict", json={"input": "not a number"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail[0]["loc"] == ["body", "input"]
    r = pydantic_server.post("/predict", json={"other": 1})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "input"] and r.json()["detail"][0]["type"] == "missing"


def test_pydantic_malformed_json_is_400(pydantic_server):
    r = pydantic_server.post("/predict", content=b"{nope")
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert detail.startswith("the body is not valid JSON: ") and detail.lower().count("json") == 1  # no repeats


def test_422_bodies_are_the_ones_fastapi_writes(pydantic_server):
    """The same model behind a FastAPI route: the same status and the same loc/msg/type per field."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    fastapi_app = FastAPI()

    @fastapi_app.post("/predict")
    def predict(body: PredictRequest) -> dict:
        return {}

    with TestClient(fastapi_app) as fastapi:
        for payload in ({"input": "not a number"}, {"other": 1}, {}, {"input": [1]}):
            theirs, ours = fastapi.post("/predict", json=payload), pydantic_server.post("/predict", json=payload)
            assert ours.status_code == theirs.status_code == 422
            expected = [{k: e[k] for k in ("loc", "msg", "type")} for e in theirs.json()["detail"]]
            assert ours.json() == {"detail": expected}, payload


def test_openapi_is_built_from_the_models(pydantic_server):
    doc = pydantic_server.get("/openapi.json").json()
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    assert doc["components"]["schemas"]["PredictRequest"]["properties"]["input"]["type"] == "number"


def test_metrics_count_requests(square):
    square.post("/predict", json={"input": 1.0})
    text = square.get("/metrics").text
    ok_line = 'litserve_requests_total{route="/predict",status="200"}'
    line = next(ln for ln in text.splitlines() if ln.startswith(ok_line))
    assert float(line.split()[-1]) >= 1
    assert 'litserve_queue_depth{route="/predict"} 0.0' in text
    assert 'litserve_workers_ready{route="/predict"} 1.0' in text


def test_api_key(monkeypatch):
    monkeypatch.setenv("LIT_SERVER_API_KEY", "s3cret")
    app = ls.create_app(SquareAPI(), accelerator="cpu")
    monkeypatch.delenv("LIT_SERVER_API_KEY")  # read at creation, not per request
    with ThreadServer(app) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/predict", json={"input": 2.0}).status_code == 401
        r = client.post("/predict", json={"input": 2.0}, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
        r = client.post("/predict", json={"input": 2.0}, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200 and r.json() == {"output": 4.0}
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        assert client.get("/info").status_code == 401
        assert client.get("/info", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert "s3cret" not in json.dumps(client.get("/info", headers={"X-API-Key": "s3cret"}).json())

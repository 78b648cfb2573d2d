"""``GET /docs``: Swagger UI from files shipped in a package (no CDN), over ``/openapi.json`` with the
pydantic models; both follow a mount point; 404 and 405 answer JSON like every other error.

No worker is needed for any of this, so the app is called in-process without its lifespan.
"""

from __future__ import annotations

import re

import pytest
from apis import PydanticAPI, SquareAPI
from starlette.applications import Starlette
from starlette.testclient import TestClient

import litserve as ls
from litserve.core import docs_ui


def _client(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=True)


def test_docs_page_loads_swagger_ui_from_this_server_only():
    client = _client(ls.create_app(PydanticAPI(), accelerator="cpu"))
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "SwaggerUIBundle" in page and '"/openapi.json"' in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/docs/") for s in sources), sources  # nothing from another host
    for src in sources:
        asset = client.get(src)
        assert asset.status_code == 200 and len(asset.content) > 500, src
    js = client.get("/docs/swagger-ui-bundle.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in js.content


def test_only_the_pages_own_files_are_served():
    client = _client(ls.create_app(SquareAPI(), accelerator="cpu"))
    for name in ("index.j2", "..%2f..%2fsetup.py", "swagger-ui.js.map"):
        r = client.get(f"/docs/{name}")
        assert r.status_code == 404 and "detail" in r.json()


def test_schema_has_the_pydantic_models():
    schema = _client(ls.create_app(PydanticAPI(), accelerator="cpu")).get("/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    op = schema["paths"]["/predict"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictResponse"
    }
    assert schema["components"]["schemas"]["PredictRequest"]["properties"]["input"]["type"] == "number"


@pytest.mark.parametrize("host_kind", ["starlette", "fastapi"])
def test_mounted_schema_and_docs_show_the_mount_path(host_kind):
    model = ls.create_app(PydanticAPI(), accelerator="cpu")
    if host_kind == "fastapi":
        import fastapi

        host = fastapi.FastAPI()
    else:
        host = Starlette()
    host.mount("/model", model)
    client = _client(host)
    schema = client.get("/model/openapi.json").json()
    assert list(schema["paths"]) == ["/model/predict"]
    page = client.get("/model/docs").text
    assert '"/model/openapi.json"' in page
    for src in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert src.startswith("/model/docs/") and client.get(src).status_code == 200
    # the unmounted app's own schema is unchanged
    assert list(_client(model).get("/openapi.json").json()["paths"]) == ["/predict"]


def test_404_is_json_and_says_where_the_model_is():
    client = _client(ls.create_app(SquareAPI(api_path="/v1/square"), accelerator="cpu"))
    r = client.get("/predict")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert "POST /v1/square" in r.json()["detail"] and "/docs" in r.json()["detail"]


def test_404_names_a_specs_routes_each_once_with_its_method():
    from apis_openai import EchoLLM, HashEmbedder

    chat = _client(ls.create_app(EchoLLM(spec=ls.OpenAISpec()), accelerator="cpu")).post("/predict")
    assert chat.status_code == 404
    assert chat.json()["detail"] == (
        "Not Found: no route for POST /predict; the model is at POST /v1/chat/completions, GET /v1/models, "
        "and /docs lists every route"
    )
    apis = [SquareAPI(api_path="/square"), HashEmbedder(spec=ls.OpenAIEmbeddingSpec())]
    both = _client(ls.create_app(apis, accelerator="cpu")).get("/nope").json()["detail"]
    assert "the model is at POST /square, POST /v1/embeddings, GET /v1/models, and" in both, both


def test_404_inside_a_mount_names_the_mounted_route():
    host = Starlette()
    host.mount("/model", ls.create_app(SquareAPI(), accelerator="cpu"))
    r = _client(host).get("/model/nope")
    assert r.status_code == 404 and "POST /model/predict" in r.json()["detail"]


def test_405_is_json_and_keeps_the_allow_header():
    client = _client(ls.create_app(SquareAPI(), accelerator="cpu"))
    r = client.get("/predict")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json() == {"detail": "Method Not Allowed: /predict answers POST, not GET"}
    r = client.post("/health")
    assert r.status_code == 405 and "GET" in r.json()["detail"]


def test_the_page_says_so_when_swagger_ui_is_missing(monkeypatch):
    monkeypatch.setattr(docs_ui, "assets_dir", lambda: None)
    r = _client(ls.create_app(SquareAPI(), accelerator="cpu")).get("/docs")
    assert r.status_code == 404 and "pip install swagger-ui-bundle-v2" in r.json()["detail"]

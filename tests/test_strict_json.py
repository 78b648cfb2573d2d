"""JSON numbers are finite (RFC 8259, issue 11 item 4): ``NaN``, ``Infinity`` and ``-Infinity`` in a
request body are invalid JSON (400), whether the app validates the body against a pydantic model or
the worker parses it; an ``encode_response`` whose output holds one is a 500 that says so, never
invalid JSON on the wire. The same words inside strings are ordinary text."""

from __future__ import annotations

import json
import math

import httpx
import pydantic
import pytest
from apis import PydanticAPI
from apis_faults import FaultAPI
from support.servers import ThreadServer

import litserve as ls
from litserve.core.codec import NonFiniteNumber, ResponseEncoder

NON_FINITE = ["NaN", "Infinity", "-Infinity"]


@pytest.fixture(scope="module")
def plain():
    app = ls.create_app(FaultAPI(), accelerator="cpu", devices=1, timeout=20)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def typed():
    app = ls.create_app(PydanticAPI(), accelerator="cpu", devices=1, timeout=20)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.mark.parametrize("token", NON_FINITE)
def test_non_finite_numbers_in_a_body_are_400_in_the_worker(plain, token):
    r = plain.post(
        "/predict", content=f'{{"op": "echo", "value": {token}}}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert "the body is not valid JSON" in r.json()["detail"] and "not JSON numbers" in r.json()["detail"]


@pytest.mark.parametrize("token", NON_FINITE)
def test_non_finite_numbers_in_a_body_are_400_before_a_pydantic_model_sees_them(typed, token):
    r = typed.post("/predict", content=f'{{"input": {token}}}', headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text  # not 200 with {"output": null}
    assert "not JSON numbers" in r.json()["detail"]


def test_the_words_inside_strings_are_ordinary_text(plain, typed):
    r = plain.post("/predict", json={"op": "echo", "value": ["NaN", "Infinity", "-Infinity"]})
    assert r.status_code == 200 and r.json()["value"] == ["NaN", "Infinity", "-Infinity"]
    assert typed.post("/predict", json={"input": 3}).json() == {"output": 9.0}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_encode_response_producing_a_non_finite_number_is_a_500_that_says_so(plain, value):
    r = plain.post("/predict", json={"op": "float", "value": value})
    assert r.status_code == 500
    body = json.loads(r.content)  # strict: the body on the wire is valid JSON
    assert "non-finite number" in body["detail"] and "encode_response" in body["detail"]
    assert plain.post("/predict", json={"op": "float", "value": "1.5"}).json() == {"value": 1.5}  # worker lives


class Out(pydantic.BaseModel):
    output: float
    note: str | None = None


def test_a_pydantic_response_holding_nan_is_refused_not_written_as_null():
    encode = ResponseEncoder(Out)
    with pytest.raises(NonFiniteNumber, match="non-finite"):
        encode({"output": math.inf})
    with pytest.raises(NonFiniteNumber):
        encode(Out(output=math.nan))
    assert json.loads(encode({"output": 2.0})) == {"output": 2.0, "note": None}  # a real null stays


@pytest.mark.parametrize("number", ["1e999", "-1e999"])
def test_a_number_too_large_for_a_double_is_the_request_s_fault_not_a_500(plain, number):
    body = f'{{"op": "echo", "value": {number}}}'  # parses as infinity, which the echo would return
    r = plain.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "too large for a 64-bit float" in r.json()["detail"]

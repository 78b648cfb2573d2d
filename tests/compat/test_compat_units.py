"""The pure pieces behind LitServe's hooks: which callbacks a runner calls, form parsing, the
middleware list, and the loggers' thread."""

from __future__ import annotations

import threading

import httpx
import pytest
from starlette.datastructures import UploadFile
from starlette.middleware.gzip import GZipMiddleware

import litserve as ls
from litserve.callbacks import CallbackRunner, EventTypes
from litserve.core.forms import is_form, parse_form
from litserve.errors import BadRequest, ConfigurationError
from litserve.loggers import LogDispatcher, encode_entry
from litserve.middlewares import normalize_middlewares


class Recorder(ls.Callback):
    def __init__(self):
        self.seen = []

    def on_before_predict(self, lit_api):
        self.seen.append(("before", lit_api))

    def on_after_predict(self, lit_api):
        raise RuntimeError("a broken callback must not break the others")


class Second(ls.Callback):
    def __init__(self):
        self.seen = []

    def on_after_predict(self, lit_api):
        self.seen.append(("after", lit_api))


def test_runner_calls_overridden_hooks_in_order_and_survives_errors():
    first, second = Recorder(), Second()
    runner = CallbackRunner([first, second])
    assert runner and runner.listens(EventTypes.BEFORE_PREDICT) and not runner.listens("on_server_start")
    runner.trigger_event(EventTypes.BEFORE_PREDICT.value, lit_api="api")
    runner.trigger_event("on_after_predict", lit_api="api")
    runner.trigger_event("on_server_start", litserver=None)  # nobody listens: nothing happens
    assert first.seen == [("before", "api")] and second.seen == [("after", "api")]
    assert not CallbackRunner() and not CallbackRunner(ls.callbacks.NoopCallback())
    with pytest.raises(ValueError, match="Callback"):
        CallbackRunner([object()])


def test_runner_pickles_with_its_callbacks():
    import pickle

    runner = pickle.loads(pickle.dumps(CallbackRunner([Second()])))
    assert runner.listens("on_after_predict")


def test_multipart_and_urlencoded_forms():
    request = httpx.Request(
        "POST", "http://x/", files={"f": ("a.bin", b"\x00\x01--\r\n", "application/octet-stream")}, data={"k": "v"}
    )
    body, ctype = request.read(), request.headers["content-type"].encode()
    assert is_form(ctype) and is_form(b"application/x-www-form-urlencoded") and not is_form(b"application/json")
    form = parse_form(body, ctype)
    assert form["k"] == "v"
    upload = form["f"]
    assert isinstance(upload, UploadFile)
    assert (upload.filename, upload.content_type, upload.size, upload.file.read()) == (
        "a.bin",
        "application/octet-stream",
        6,
        b"\x00\x01--\r\n",
    )
    assert parse_form(b"a=1&b=x+y", b"application/x-www-form-urlencoded").multi_items() == [("a", "1"), ("b", "x y")]
    with pytest.raises(BadRequest):
        parse_form(b"junk", b"multipart/form-data; boundary=zz")
    with pytest.raises(BadRequest):
        parse_form(b"", b"multipart/form-data")


def test_middleware_list_forms():
    out = normalize_middlewares([GZipMiddleware, (GZipMiddleware, {"minimum_size": 10})])
    assert [m.cls for m in out] == [GZipMiddleware, GZipMiddleware]
    assert out[1].kwargs == {"minimum_size": 10}
    with pytest.raises(ConfigurationError):
        normalize_middlewares(GZipMiddleware)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        normalize_middlewares([(GZipMiddleware, 10)])


def test_log_dispatcher_feeds_every_logger_off_the_caller_thread():
    done = threading.Event()
    seen: list[tuple[str, object, str]] = []

    class Collect(ls.Logger):
        def process(self, key, value):
            seen.append((key, value, threading.current_thread().name))
            if len(seen) == 3:
                done.set()

    class Broken(ls.Logger):
        def process(self, key, value):
            raise RuntimeError("ignored")

    dispatcher = LogDispatcher([Broken(), Collect()])
    dispatcher.start()
    dispatcher.put(encode_entry("a", 1))
    dispatcher.put(b"not json")
    dispatcher.put(encode_entry("b", {"x": [1, 2]}))
    dispatcher.put(encode_entry("c", object()))  # not JSON: goes as its str
    assert done.wait(10)
    dispatcher.stop()
    assert [(k, v) for k, v, _ in seen][:2] == [("a", 1), ("b", {"x": [1, 2]})]
    assert seen[2][0] == "c" and seen[2][1].startswith("<object object")
    assert {name for _, _, name in seen} == {"litserve-loggers"}


def test_max_size_middleware_refuses_large_bodies():
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from litserve.middlewares import MaxSizeMiddleware

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"size": len(await request.body())})

    app = Starlette(routes=[Route("/", echo, methods=["POST"])])
    app.add_middleware(MaxSizeMiddleware, max_size=10)
    with TestClient(app) as client:
        assert client.post("/", content=b"x" * 10).json() == {"size": 10}
        assert client.post("/", content=b"x" * 11).status_code == 413

        def chunks():
            yield b"x" * 6
            yield b"x" * 6

        assert client.post("/", content=chunks()).status_code == 413  # no Content-Length: counted as it streams

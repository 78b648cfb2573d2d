"""What ``import litserve`` offers, LitAPI's defaults, and create_app refusing settings that cannot work."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from apis import SquareAPI

import litserve as ls

PUBLIC = {
    "Callback",
    "ConfigurationError",
    "LitAPI",
    "LitApp",
    "LitServeError",
    "LitServer",
    "LitSpec",
    "Logger",
    "OpenAIEmbeddingSpec",
    "OpenAISpec",
    "Request",
    "RequestError",
    "Response",
    "Settings",
    "WorkerStartupError",
    "__version__",
    "create_app",
    "request_id",
    "request_ids",
    "resolve_devices",
    "test_examples",
}


def test_all_is_exactly_the_public_names_and_each_is_importable():
    assert set(ls.__all__) == PUBLIC
    assert len(ls.__all__) == len(PUBLIC)
    for name in ls.__all__:
        assert getattr(ls, name) is not None
    ns: dict = {}
    exec("from litserve import *", ns)
    assert set(ns) - {"__builtins__"} == PUBLIC


def test_specs_are_importable_from_litserve_specs_as_in_litserve():
    from litserve.specs import OpenAIEmbeddingSpec, OpenAISpec

    assert OpenAISpec is ls.OpenAISpec and OpenAIEmbeddingSpec is ls.OpenAIEmbeddingSpec
    import litserve.specs

    assert set(litserve.specs.__all__) <= set(dir(litserve.specs))
    with pytest.raises(AttributeError, match="has no attribute 'WebSocketSpec'"):
        litserve.specs.WebSocketSpec  # noqa: B018


def test_exception_hierarchy():
    assert issubclass(ls.ConfigurationError, ls.LitServeError) and issubclass(ls.ConfigurationError, ValueError)
    assert issubclass(ls.WorkerStartupError, ls.LitServeError)
    assert issubclass(ls.RequestError, ls.LitServeError)
    assert isinstance(ls.__version__, str) and ls.__version__.count(".") == 2


def test_litapi_defaults():
    class Minimal(ls.LitAPI):
        def predict(self, x):
            return x

    api = Minimal()
    assert (api.max_batch_size, api.batch_timeout, api.stream, api.max_concurrency) == (1, 0.0, False, 1)
    assert api.setup("cpu") is None
    assert api.decode_request({"a": 1}) == {"a": 1}
    assert api.encode_response([1, 2]) == [1, 2]
    assert api.batch([1, 2]) == [1, 2]
    assert api.unbatch((3, 4)) == [3, 4]
    assert not api.is_async
    assert api.request_model() is None and api.response_model() is None
    api.check()


def test_litapi_batch_stacks_arrays_and_tensors():
    api = SquareAPI()
    stacked = api.batch([np.zeros(3), np.ones(3)])
    assert isinstance(stacked, np.ndarray) and stacked.shape == (2, 3)
    torch = pytest.importorskip("torch", reason="torch is not installed (see the README to install it)")
    t = api.batch([torch.zeros(2), torch.ones(2)])
    assert isinstance(t, torch.Tensor) and t.shape == (2, 2)
    assert [x.tolist() for x in api.unbatch(t)] == [[0.0, 0.0], [1.0, 1.0]]


def test_litapi_predict_must_be_implemented():
    class NoPredict(ls.LitAPI):
        pass

    with pytest.raises(NotImplementedError):
        NoPredict().predict(1)
    with pytest.raises(ls.ConfigurationError, match="predict"):
        ls.create_app(NoPredict(), accelerator="cpu")


def test_litapi_async_predict_is_detected():
    class Async(ls.LitAPI):
        async def predict(self, x):
            return x

    assert Async(max_concurrency=4).is_async


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(max_batch_size=0), "max_batch_size"),
        (dict(max_batch_size=2.0), "max_batch_size"),
        (dict(max_batch_size=True), "max_batch_size"),
        (dict(batch_timeout=-1), "batch_timeout"),
        (dict(batch_timeout="1s"), "batch_timeout"),
        (dict(max_concurrency=0), "max_concurrency"),
        (dict(max_concurrency=None), "max_concurrency"),
    ],
)
def test_litapi_refuses_bad_model_settings(kwargs, name):
    with pytest.raises(ls.ConfigurationError, match=name):
        SquareAPI(**kwargs)


class Gen(ls.LitAPI):  # at module level: create_app refuses a class the workers could not import
    def predict(self, x):
        yield x


class NoSuper(ls.LitAPI):
    def __init__(self):
        pass

    def predict(self, x):
        return x


def test_litapi_refuses_impossible_combinations():
    with pytest.raises(ls.ConfigurationError, match="stream=True"):
        ls.create_app(Gen(), accelerator="cpu")
    with pytest.raises(ls.ConfigurationError, match="generator"):
        ls.create_app(SquareAPI(stream=True), accelerator="cpu")
    ls.create_app(Gen(stream=True, max_batch_size=2), accelerator="cpu")  # batched streaming is supported
    with pytest.raises(ls.ConfigurationError, match="max_concurrency"):
        ls.create_app(SquareAPI(max_concurrency=2), accelerator="cpu")
    with pytest.raises(ls.ConfigurationError, match="super"):
        ls.create_app(NoSuper(), accelerator="cpu")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(timeout=0), "timeout"),
        (dict(timeout=-1), "timeout"),
        (dict(timeout="30"), "timeout"),
        (dict(timeout=float("inf")), "timeout"),
        (dict(timeout=float("nan")), "timeout"),
        (dict(timeout=True), "timeout"),
        (dict(api_path="predict"), "api_path"),
        (dict(api_path=""), "api_path"),
        (dict(healthcheck_path="health"), "healthcheck_path"),
        (dict(info_path=3), "info_path"),
        (dict(model_metadata={"f": object()}), "model_metadata"),
        (dict(middlewares="gzip"), "middlewares"),
        (dict(track_requests="yes"), "track_requests"),
        (dict(workers_per_device={"/predict": 0}), "workers_per_device"),
        (dict(workers_per_device={"predict": 1}), "workers_per_device"),
        (dict(workers_per_device={"/other": 2}), "workers_per_device.*no API serves"),
        (dict(max_queue_size=0), "max_queue_size"),
        (dict(max_queue_size=1.5), "max_queue_size"),
        (dict(max_queue_size=True), "max_queue_size"),
        (dict(max_payload_size="lots"), "max_payload_size"),
        (dict(max_payload_size=0), "max_payload_size"),
        (dict(max_payload_size=-5), "max_payload_size"),
        (dict(max_payload_size=True), "max_payload_size"),
        (dict(max_payload_size=1.5), "max_payload_size"),
        (dict(startup_timeout=-1), "startup_timeout"),
        (dict(startup_timeout="10"), "startup_timeout"),
        (dict(shutdown_grace=-0.5), "shutdown_grace"),
        (dict(shutdown_grace=None), "shutdown_grace"),
        (dict(api_key=123), "api_key"),
        (dict(accelerator="tpu"), "accelerator"),
        (dict(accelerator="cpu", devices=0), "devices"),
        (dict(accelerator="cpu", devices=[0, 1]), "devices"),
        (dict(accelerator="cpu", workers_per_device=0), "workers_per_device"),
    ],
)
@pytest.mark.filterwarnings("ignore:api_path= on the server is deprecated")
def test_create_app_refuses_bad_settings_naming_them(kwargs, name):
    kwargs.setdefault("accelerator", "cpu")
    with pytest.raises(ls.ConfigurationError, match=name):
        ls.create_app(SquareAPI(), **kwargs)


def test_create_app_refuses_cuda_without_gpus(monkeypatch):
    from litserve import devices

    monkeypatch.setattr(devices, "_nvml_device_count", lambda: 0)
    with pytest.raises(ls.ConfigurationError, match="CUDA"):
        ls.create_app(SquareAPI(), accelerator="cuda")


def test_create_app_refuses_what_is_not_a_litapi():
    class Duck:
        def predict(self, x):
            return x

    with pytest.raises(ls.ConfigurationError, match="LitAPI"):
        ls.create_app(Duck())  # type: ignore[arg-type]
    with pytest.raises(ls.ConfigurationError, match="LitAPI"):
        ls.create_app(SquareAPI)  # the class, not an instance  # type: ignore[arg-type]


def test_litserver_refuses_bad_settings_too():
    with pytest.raises(ls.ConfigurationError, match="timeout"):
        ls.LitServer(SquareAPI(), accelerator="cpu", timeout=-3)


def test_settings_are_normalised_and_nothing_starts_at_creation():
    app = ls.create_app(
        SquareAPI(api_path="/v1/square"),
        accelerator="cpu",
        timeout=False,
        max_payload_size="2KiB",
        workers_per_device=2,
        api_key="",
    )
    assert isinstance(app, ls.LitApp)
    s = app.settings
    assert isinstance(s, ls.Settings)
    assert (
        s.timeout is None and s.max_payload_size == 2048 and app.endpoints[0].path == "/v1/square" and s.api_key is None
    )
    assert app.pool.devices == ["cpu", "cpu"]
    assert app.pool.state == "new"
    app2 = ls.create_app(SquareAPI(), accelerator="cpu", timeout=5, max_payload_size="10MB", log_level=logging.DEBUG)
    assert app2.settings.timeout == 5.0 and app2.settings.max_payload_size == 10_000_000
    assert ls.Settings().timeout == 30.0  # the documented default

"""The hook pipeline shared by both worker loops, run in the test process with both drivers.

What a user sees: the same replies whichever loop runs their API, the request id readable in every
hook and never leaking out of it, errors as replies, and their stream generators always closed.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, StreamingResponse

import litserve as ls
from litserve.context import request_id, request_ids
from litserve.core import protocol as P
from litserve.core.pipeline import CANCELLED, Pipeline, run_async, run_sync


def items(*values: object) -> list[P.Item]:
    return [P.Item(i + 1, 0, json.dumps(v).encode(), b"req-%d" % (i + 1)) for i, v in enumerate(values)]


def run(pipeline_steps, driver: str):
    if driver == "sync":
        return run_sync(pipeline_steps)
    return asyncio.run(run_async(pipeline_steps))


class SeenIds(ls.LitAPI):
    """Records the request id each hook sees; ``{"fail": where}`` raises in that hook."""

    def setup(self, device):
        self.seen = []

    def decode_request(self, request):
        self.seen.append(("decode", request_id()))
        if request.get("fail") == "decode":
            raise ValueError("bad input")
        return request

    def batch(self, inputs):
        self.seen.append(("batch", request_ids()))
        return inputs

    def predict(self, x):
        self.seen.append(("predict", request_ids()))
        if isinstance(x, dict) and x.get("fail") == "predict":
            raise RuntimeError("model broke")
        return x

    def encode_response(self, output):
        self.seen.append(("encode", request_id()))
        return {"out": output.get("v") if isinstance(output, dict) else output}


class AsyncSeenIds(SeenIds):
    async def decode_request(self, request):
        return SeenIds.decode_request(self, request)

    async def predict(self, x):
        return SeenIds.predict(self, x)


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_each_hook_sees_its_request_id_and_nothing_leaks_out(driver):
    api = (SeenIds if driver == "sync" else AsyncSeenIds)()
    api.setup("cpu")
    replies = run(Pipeline(api).unary(items({"v": 1})), driver)
    assert replies == [(1, 200, b'{"out":1}')]
    assert api.seen == [("decode", "req-1"), ("predict", ("req-1",)), ("encode", "req-1")]
    assert request_ids() == ()  # the context was reset on the way out


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_batch_decodes_each_predicts_once_and_answers_each(driver):
    api = (SeenIds if driver == "sync" else AsyncSeenIds)(max_batch_size=4)
    api.setup("cpu")
    replies = run(Pipeline(api).unary(items({"v": 1}, {"fail": "decode"}, {"v": 3})), driver)
    by_rid = {r[0]: r for r in replies}
    assert by_rid[1][1:] == (200, b'{"out":1}') and by_rid[3][1:] == (200, b'{"out":3}')
    assert by_rid[2][1] == 500 and b"bad input" in by_rid[2][2]  # the bad one alone fails
    assert ("batch", ("req-1", "req-3")) in api.seen
    assert [s for s in api.seen if s[0] == "predict"] == [("predict", ("req-1", "req-3"))]
    assert request_ids() == ()


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_raising_predict_is_a_500_reply_and_the_context_is_reset(driver):
    api = (SeenIds if driver == "sync" else AsyncSeenIds)()
    api.setup("cpu")
    [(rid, status, body, _headers)] = run(Pipeline(api).unary(items({"fail": "predict"})), driver)
    assert rid == 1 and status == 500 and b"model broke" in body
    assert request_ids() == ()


class Counting(ls.LitAPI):
    def __init__(self, **kw):
        super().__init__(stream=True, **kw)
        self.closed = []

    def predict(self, x):
        try:
            yield from range(x["n"])
        finally:
            self.closed.append("predict")

    def encode_response(self, outputs):
        for o in outputs:
            yield {"i": o}


class AsyncCounting(Counting):
    async def predict(self, x):
        try:
            for i in range(x["n"]):
                yield i
                await asyncio.sleep(0)  # model behaviour: an async generator that yields control
        finally:
            self.closed.append("predict")

    async def encode_response(self, outputs):
        async for o in outputs:
            yield {"i": o}


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_stream_emits_each_chunk_then_ends(driver):
    api = (Counting if driver == "sync" else AsyncCounting)()
    sent = []

    def emit(rid, payload):
        sent.append((rid, payload))
        return False

    end = run(Pipeline(api).stream(items({"n": 3})[0], emit), driver)
    assert end == (1, 200, b"")
    assert sent == [(1, b'{"i":0}'), (1, b'{"i":1}'), (1, b'{"i":2}')]
    assert api.closed == ["predict"]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_cancelled_stream_stops_and_closes_the_users_generators(driver):
    api = (Counting if driver == "sync" else AsyncCounting)()
    sent = []

    def emit(rid, payload):
        sent.append(payload)
        return len(sent) == 2  # cancelled after the second chunk

    end = run(Pipeline(api).stream(items({"n": 100})[0], emit), driver)
    assert end == (1, CANCELLED, b"")
    assert len(sent) == 2
    assert api.closed == ["predict"]
    assert request_ids() == ()


def test_an_async_stream_whose_task_is_cancelled_closes_the_generators():
    api = AsyncCounting()

    async def main():
        entered, never = asyncio.Event(), asyncio.Event()

        async def emit(rid, payload):
            entered.set()
            await never.wait()  # the task is cancelled while it waits here
            return False

        task = asyncio.ensure_future(run_async(Pipeline(api).stream(items({"n": 100})[0], emit)))
        await asyncio.wait_for(entered.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert api.closed == ["predict"]


class Streamed(ls.LitAPI):
    """encode_response returns a StreamingResponse (or a FileResponse for ``{"file": path}``)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.closed = []
        self.background = []

    def decode_request(self, request):
        return request

    def predict(self, x):
        return x

    def encode_response(self, x):
        if "file" in x:
            return FileResponse(x["file"], background=BackgroundTask(self.background.append, "file"))

        def lines():
            try:
                for i in range(x["n"]):
                    yield f"line {i}\n"
            finally:
                self.closed.append("lines")

        async def alines():
            try:
                for i in range(x["n"]):
                    yield f"line {i}\n".encode()
            finally:
                self.closed.append("alines")

        body = alines() if x.get("async") else lines()
        return StreamingResponse(body, status_code=201, media_type="text/plain", headers={"X-N": str(x["n"])})


class AsyncStreamed(Streamed):
    async def predict(self, x):
        return x


def _streamed_api(driver):
    return (Streamed if driver == "sync" else AsyncStreamed)()


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("body", ["sync", "async"])
def test_a_streaming_response_goes_out_as_a_head_then_its_chunks(driver, body):
    api = _streamed_api(driver)
    sent = []

    def emit(rid, payload, status=200, tag=b""):
        sent.append((rid, payload, status, tag))
        return False

    replies = run(Pipeline(api, emit).unary(items({"n": 2, "async": body == "async"})), driver)
    assert replies == [(1, 200, b"")]  # the terminal reply, after the body
    (rid, payload, status, tag), *chunks = sent
    assert (rid, payload, status) == (1, b"", 201)
    headers = dict(json.loads(tag[1:]))
    assert tag[:1] == b"R" and headers["content-type"] == "text/plain; charset=utf-8" and headers["x-n"] == "2"
    assert chunks == [(1, b"line 0\n", 200, b""), (1, b"line 1\n", 200, b"")]
    assert api.closed == ["alines" if body == "async" else "lines"]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_cancelled_streaming_response_closes_the_users_generator(driver):
    api = _streamed_api(driver)
    sent = []

    def emit(rid, payload, status=200, tag=b""):
        sent.append(payload)
        return len(sent) == 2  # the client left after the first line

    replies = run(Pipeline(api, emit).unary(items({"n": 100})), driver)
    assert replies == [(1, CANCELLED, b"")]
    assert sent == [b"", b"line 0\n"]
    assert api.closed == ["lines"]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_file_response_is_read_in_chunks_then_its_background_runs(driver, tmp_path):
    api = _streamed_api(driver)
    data = bytes(range(256)) * 1000  # several chunks of FileResponse.chunk_size
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    sent = []

    def emit(rid, payload, status=200, tag=b""):
        sent.append(payload)
        return False

    replies = run(Pipeline(api, emit).unary(items({"file": str(path)})), driver)
    assert replies == [(1, 200, b"")]
    head, *chunks = sent
    assert head == b"" and b"".join(chunks) == data
    assert len(chunks) > 1 and max(map(len, chunks)) <= FileResponse.chunk_size  # memory bounded by a chunk
    assert api.background == ["file"]


def test_a_streaming_response_without_emit_is_an_error_reply():
    replies = run_sync(Pipeline(Streamed()).unary(items({"n": 1})))
    assert replies[0][:2] == (1, 500)


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_batch_with_streaming_responses_streams_each_then_answers_each(driver):
    api = (Streamed if driver == "sync" else AsyncStreamed)(max_batch_size=2)
    sent = []

    def emit(rid, payload, status=200, tag=b""):
        sent.append((rid, payload))
        return False

    replies = run(Pipeline(api, emit).unary(items({"n": 1}, {"n": 2})), driver)
    assert replies == [(1, 200, b""), (2, 200, b"")]
    assert sent == [(1, b""), (1, b"line 0\n"), (2, b""), (2, b"line 0\n"), (2, b"line 1\n")]

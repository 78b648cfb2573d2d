import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path

from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

import litserve as ls


def wait_for_file(path, timeout=30.0):
    """Block until ``path`` exists (the test creates it once it has read the first line)."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists() and time.monotonic() < deadline:
        threading.Event().wait(0.01)


class ReportAPI(ls.LitAPI):
    """A plain (def) API that streams a CSV report from a generator, as a FastAPI endpoint would."""

    def setup(self, device):
        self.model = lambda n: [(i, i * i) for i in range(n)]

    def decode_request(self, request):
        return request

    def predict(self, request):
        return request, self.model(request["rows"])

    def encode_response(self, output):
        request, rows = output

        def lines():
            yield "n,square\n"
            if request.get("wait_for"):
                wait_for_file(request["wait_for"])
            for i, (n, square) in enumerate(rows):
                if i == request.get("fail_at"):
                    raise RuntimeError("the report broke")
                yield f"{n},{square}\n"

        def endless():  # until the client leaves: the generator is closed, and says so in a file
            sent = 0
            try:
                yield "n\n"
                wait_for_file(request["wait_for"])
                while sent < 10**7:
                    sent += 1
                    yield f"{sent}\n"
            finally:
                Path(request["closed"]).write_text(str(sent))

        async def alines():
            for line in lines():
                yield line.encode()

        body = endless() if "closed" in request else alines() if request.get("async") else lines()
        return StreamingResponse(body, media_type="text/csv", headers={"X-Rows": str(len(rows))})


class EventsAPI(ls.LitAPI):
    """An async API whose encode_response streams server-sent events from an async generator."""

    def setup(self, device):
        self.model = lambda n: range(n)

    async def decode_request(self, request):
        return request

    async def predict(self, request):
        return request, self.model(request["count"])

    async def encode_response(self, output):
        request, counts = output

        async def endless():  # until the client leaves: the task is cancelled, the generator closed
            sent = 0
            try:
                while sent < 10**7:
                    sent += 1
                    yield f"data: {sent}\n\n"
                    await asyncio.sleep(0.001)  # an event source that takes its time
            finally:
                Path(request["closed"]).write_text(str(sent))

        async def events():
            for i in counts:
                if i == request.get("fail_at"):
                    raise ValueError("no more events")
                await asyncio.sleep(0)
                yield f"data: {i}\n\n"

        body = endless() if "closed" in request else events()
        return StreamingResponse(body, status_code=202, media_type="text/event-stream")


class DownloadAPI(ls.LitAPI):
    """Writes a file per request and returns it; a background task deletes it after it was sent."""

    def setup(self, device):
        self.model = lambda size: bytes(i % 251 for i in range(size))

    def decode_request(self, request):
        return request["size"]

    def predict(self, size):
        return self.model(size)

    def encode_response(self, data):
        fd, path = tempfile.mkstemp(suffix=".bin")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return FileResponse(
            path,
            filename="data.bin",
            headers={"X-Path": path},
            background=BackgroundTask(os.remove, path),
        )


class MissingFileAPI(ls.LitAPI):
    def decode_request(self, request):
        return request

    def predict(self, x):
        return x

    def encode_response(self, output):
        return FileResponse("/nonexistent/litserve-test.bin")


if __name__ == "__main__":
    server = ls.LitServer(
        [
            ReportAPI(api_path="/report"),
            EventsAPI(api_path="/events", enable_async=True),
            DownloadAPI(api_path="/download"),
            MissingFileAPI(api_path="/missing"),
        ],
        accelerator="cpu",
    )
    server.run(port=8000)

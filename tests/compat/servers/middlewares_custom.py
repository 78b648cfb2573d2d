import uuid

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.gzip import GZipMiddleware

import litserve as ls


class RequestIdMiddleware(BaseHTTPMiddleware):
    def __init__(self, app, length: int) -> None:
        self.length = length
        super().__init__(app)

    async def dispatch(self, request, call_next):
        response = await call_next(request)
        response.headers["X-Trace-Id"] = uuid.uuid4().hex[: self.length]
        return response


class BigOutputAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda n: "x" * n

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output):
        return {"output": output}


if __name__ == "__main__":
    server = ls.LitServer(
        BigOutputAPI(),
        middlewares=[(RequestIdMiddleware, {"length": 5}), (GZipMiddleware, {"minimum_size": 100})],
    )
    server.run(port=8000)

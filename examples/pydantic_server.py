"""Request and response as pydantic models: a bad body is refused with 422 before any worker sees it.

Run it, then ``python3 client.py`` (it posts ``{"input": 4.0}``), or try a bad body::

    curl -X POST http://127.0.0.1:8000/predict -H 'Content-Type: application/json' -d '{"input": "x"}'
"""

from pydantic import BaseModel

import litserve as ls


class PredictRequest(BaseModel):
    input: float


class PredictResponse(BaseModel):
    output: float


class SimpleLitAPI2(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x**2

    # The annotation is what turns validation on: the body is checked against PredictRequest in the
    # server process and decode_request receives a PredictRequest instance.
    def decode_request(self, request: PredictRequest) -> float:
        return request.input

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output: float) -> PredictResponse:
        return PredictResponse(output=output)


if __name__ == "__main__":
    api = SimpleLitAPI2()
    server = ls.LitServer(api, accelerator="cpu")
    server.run(port=8000)

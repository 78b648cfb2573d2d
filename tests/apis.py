"""LitAPI classes the tests serve. They live in an importable module (not in test files) because
spawned workers unpickle them by reference."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel
from starlette.exceptions import HTTPException

import litserve as ls


class SquareAPI(ls.LitAPI):
    """The seed's example: {"input": x} -> {"output": x**2}."""

    def setup(self, device):
        self.model = lambda x: x**2
        self.device = device

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output):
        return {"output": output}


class PredictRequest(BaseModel):
    input: float


class PredictResponse(BaseModel):
    output: float


class PydanticAPI(ls.LitAPI):
    def setup(self, device):
        self.model = lambda x: x**2

    def decode_request(self, request: PredictRequest) -> float:
        return request.input

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output: float) -> PredictResponse:
        return {"output": output, "dropped": "not in the response model"}


class BehaviourAPI(ls.LitAPI):
    """One API whose request body says what to do, so one shared server covers many behaviours.

    {"op": "echo", "value": ...}         -> {"value": ..., "pid": worker pid, "device": device}
    {"op": "raise"}                      -> ValueError in predict
    {"op": "http", "status": 418}        -> HTTPException(418) ("detail": ... sets its detail)
    {"op": "block", "path": p}           -> writes p + ".started", blocks until p exists
    {"op": "exit"}                       -> the worker process dies (os._exit)
    {"op": "bad_output"}                 -> encode_response returns something not serialisable
    """

    def setup(self, device):
        self.device = device
        log = os.environ.get("LITSERVE_TEST_LOG")
        self.log = Path(log) if log else None

    def predict(self, x):
        op = x.get("op")
        if self.log is not None:
            with self.log.open("a") as f:
                f.write(f"{x.get('tag', op)}\n")
        if op == "raise":
            raise ValueError("the model refused this input")
        if op == "http":
            raise HTTPException(
                status_code=x["status"], detail=x.get("detail", "custom detail"), headers=x.get("headers")
            )
        if op == "block":
            path = Path(x["path"])
            Path(str(path) + ".started").write_text(str(os.getpid()))
            deadline = time.monotonic() + 30
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.005)  # model: a slow computation the test releases
            return {"released": path.exists()}
        if op == "exit":
            os._exit(3)
        if op == "bad_output":
            return {"value": object()}
        return {"value": x.get("value"), "pid": os.getpid(), "device": self.device}


class FailingSetupAPI(ls.LitAPI):
    def setup(self, device):
        raise RuntimeError("weights not found")

    def predict(self, x):
        return x


class BatchedSquareAPI(SquareAPI):
    """SquareAPI with dynamic batching: predict gets a list of inputs."""

    def predict(self, xs):
        return [x**2 for x in xs]

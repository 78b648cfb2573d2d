"""The toy APIs: ``x ** 2`` as a plain, a batched, a torch and a streaming API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..api import LitAPI


class SimpleLitAPI(LitAPI):
    """``{"input": x}`` → ``{"output": x ** 2}``."""

    def setup(self, device: str) -> None:
        self.model = lambda x: x**2

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class SimpleBatchedAPI(LitAPI):
    """Like ``SimpleLitAPI`` on numpy arrays, so the default ``batch`` stacks them (use max_batch_size > 1)."""

    def setup(self, device: str) -> None:
        self.model = lambda x: x**2

    def decode_request(self, request: Any) -> Any:
        import numpy as np

        return np.asarray(request["input"])

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class SimpleTorchAPI(LitAPI):
    """A one-weight torch linear layer, ``2x + 1``, on the worker's device (needs torch)."""

    def setup(self, device: str) -> None:
        import torch

        self.device = device
        self.model = torch.nn.Linear(1, 1).to(device)
        with torch.no_grad():
            self.model.weight.fill_(2.0)
            self.model.bias.fill_(1.0)

    def decode_request(self, request: Any) -> Any:
        import torch

        return torch.tensor([float(request["input"])], device=self.device)

    def predict(self, x: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.model(x[None, :])

    def encode_response(self, output: Any) -> Any:
        return {"output": float(output)}


class SimpleStreamAPI(LitAPI):
    """Streams three chunks ``{"output": "i: <input>"}``; serve it with ``stream=True``."""

    def setup(self, device: str) -> None:
        self.model = lambda i, x: f"{i}: {x}"

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Iterator[Any]:
        for i in range(3):
            yield self.model(i, x)

    def encode_response(self, output_stream: Iterator[Any]) -> Iterator[Any]:
        for output in output_stream:
            yield {"output": output}

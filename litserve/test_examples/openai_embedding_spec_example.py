"""``LitAPI`` classes for ``ls.OpenAIEmbeddingSpec``, under the names LitServe's docs and tests use.

The "model" returns random 768-dimensional vectors (no NumPy needed); the variants show what
``encode_response`` may return, including the shapes the spec refuses.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from ..api import LitAPI

DIM = 768


class TestEmbedAPI(LitAPI):
    __test__ = False  # not a pytest class, despite its name

    def setup(self, device: str) -> None:
        self.model = None

    def decode_request(self, request: Any) -> list[Any]:
        return request.ensure_list()

    def predict(self, x: list[Any]) -> list[list[float]]:
        return [[random.random() for _ in range(DIM)] for _ in x]

    def encode_response(self, output: list[list[float]]) -> dict[str, Any]:
        return {"embeddings": output}


class TestEmbedAPIWithUsage(TestEmbedAPI):
    def encode_response(self, output: list[list[float]]) -> dict[str, Any]:
        return {"embeddings": output, "prompt_tokens": 10, "total_tokens": 10}


class TestEmbedAPIWithYieldPredict(TestEmbedAPI):
    """Refused when the app is created: embeddings are returned, not streamed."""

    def predict(self, x: list[Any]) -> Iterator[float]:  # type: ignore[override]
        yield from [random.random() for _ in range(DIM)]


class TestEmbedAPIWithYieldEncodeResponse(TestEmbedAPI):
    """Refused when the app is created, for the same reason."""

    def encode_response(self, output: list[list[float]]) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        yield {"embeddings": output}


class TestEmbedAPIWithNonDictOutput(TestEmbedAPI):
    """Returns the bare list of vectors (accepted: the usage is then 0)."""

    def encode_response(self, output: list[list[float]]) -> Any:
        return output


class TestEmbedAPIWithMissingEmbeddings(TestEmbedAPI):
    """No ``embeddings`` key: each request gets a 500 that says what encode_response must return."""

    def encode_response(self, output: list[list[float]]) -> dict[str, Any]:
        return {"output": output}

"""``OpenAIEmbeddingSpec``: serve a ``LitAPI`` as OpenAI's embeddings API (``POST /v1/embeddings``).

LitServe's contract: ``decode_request`` gives ``predict`` the list of inputs (one string becomes a
list of one); ``predict`` returns one vector per input; ``encode_response`` wraps them as
``{"embeddings": [...], "prompt_tokens": n, "total_tokens": n}`` (the counts are optional). The app
then builds OpenAI's response: float lists, or base64 of little-endian float32 as the ``openai``
client asks by default; ``dimensions`` shortens each vector (renormalised when it was unit length).

With ``max_batch_size > 1`` the inputs of concurrent requests are embedded in one ``predict`` call:
the spec's ``batch`` concatenates the requests' input lists and ``unbatch`` splits the vectors back.
"""

from __future__ import annotations

import base64
import inspect
import math
import struct
from typing import TYPE_CHECKING, Any, Literal

import pydantic_core
from pydantic import BaseModel, Field, field_validator
from starlette.routing import BaseRoute

from ..errors import ConfigurationError, RequestError
from .base import LitSpec
from .chat_models import ModelList
from .exchange import Exchange, OpenAIError, SpecContext, openai_routes, parse_request

if TYPE_CHECKING:
    from ..api import LitAPI

__all__ = ["Embedding", "EmbeddingRequest", "EmbeddingResponse", "OpenAIEmbeddingSpec", "UsageInfo"]

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request


class EmbeddingRequest(BaseModel):
    input: str | list[str] | list[int] | list[list[int]]
    model: str = ""
    dimensions: int | None = Field(None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value:
                raise ValueError("input must not be empty")
            return value
        if not value:
            raise ValueError("input must not be an empty list")
        if len(value) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs per request")
        if any(isinstance(v, str) and not v for v in value) or any(isinstance(v, list) and not v for v in value):
            raise ValueError("inputs must not be empty")
        return value

    def ensure_list(self) -> list[Any]:
        return self.input if isinstance(self.input, list) and not _is_token_list(self.input) else [self.input]


def _is_token_list(value: list[Any]) -> bool:
    return bool(value) and isinstance(value[0], int)


class Embedding(BaseModel):
    index: int
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(BaseModel):
    data: list[Embedding]
    model: str
    object: Literal["list"] = "list"
    usage: UsageInfo


_RESPONSE_HELP = (
    "encode_response must return a dict like {'embeddings': [[...], ...], 'prompt_tokens': 0, 'total_tokens': 0} "
    "(one vector per input), or the list of vectors"
)


class OpenAIEmbeddingSpec(LitSpec):
    """OpenAI's embeddings API for a LitAPI whose ``predict`` returns one vector per input.

    Args:
        model_name: the model id listed by ``GET /v1/models`` and echoed when a request names none;
            when given, a request naming another model gets 404 ``model_not_found``.
    """

    stream = False

    def __init__(self, model_name: str | None = None) -> None:
        super().__init__()
        self.model_name = model_name
        self._sizes: list[int] = []

    # -- worker side -------------------------------------------------------------------------------------
    def check(self, api: LitAPI) -> None:
        if inspect.isgeneratorfunction(api.predict) or inspect.isasyncgenfunction(api.predict):
            raise ConfigurationError(
                "OpenAIEmbeddingSpec needs predict() to return the vectors (return, not yield): "
                "embeddings are not produced step by step"
            )
        encode = api.encode_response
        if inspect.isgeneratorfunction(encode) or inspect.isasyncgenfunction(encode):
            raise ConfigurationError(
                "OpenAIEmbeddingSpec needs encode_response() to return {'embeddings': [...]} (return, not yield)"
            )

    def request_model(self) -> type[EmbeddingRequest]:
        return EmbeddingRequest

    def populate_context(self, context: dict[str, Any], request: Any) -> None:
        if isinstance(request, EmbeddingRequest):
            context.update(request.model_dump(exclude={"input"}))

    def decode_request(self, request: EmbeddingRequest) -> list[Any]:
        return request.ensure_list()

    def batch(self, inputs: list[list[Any]]) -> list[Any]:
        """Concatenate the requests' inputs into one list (the sizes are kept for ``unbatch``)."""
        self._sizes = [len(x) if isinstance(x, list) else 1 for x in inputs]
        flat: list[Any] = []
        for x in inputs:
            flat.extend(x if isinstance(x, list) else [x])
        return flat

    def unbatch(self, output: Any) -> list[Any]:
        """Split the vectors of a batch back into one list per request, in request order."""
        rows = list(output)
        if len(rows) != sum(self._sizes):
            raise ValueError(f"predict returned {len(rows)} vectors for {sum(self._sizes)} inputs")
        out, start = [], 0
        for size in self._sizes:
            out.append(rows[start : start + size])
            start += size
        return out

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"embeddings": output, "prompt_tokens": 0, "total_tokens": 0}

    # -- app side ----------------------------------------------------------------------------------------
    def served_model(self) -> str:
        return self.model_name or (type(self.api).__name__ if self.api is not None else "litserve")

    def routes(self, ctx: SpecContext) -> list[BaseRoute]:
        return openai_routes("/v1/embeddings", self._embeddings, ctx, self.served_model)

    def openapi_operations(self) -> dict[str, dict[str, Any]]:
        errors = {status: ("application/json", None) for status in (400, 401, 404, 413, 500, 503, 504)}
        ok = {200: ("application/json", EmbeddingResponse), **errors}
        return {
            "/v1/embeddings": {"post": ("Embeddings of the inputs", EmbeddingRequest, ok)},
            "/v1/models": {"get": ("The models served", None, {200: ("application/json", ModelList)})},
        }

    async def _embeddings(self, ex: Exchange) -> None:
        try:
            ex.authorise()
            body = await ex.body()
            if body is None:  # never came (the client left, or a 408 was written): nothing to answer
                return
            request = parse_request(EmbeddingRequest, body, self.model_name)
            (call,) = await ex.submit([body])
            status, payload = await ex.result(call)
            if status != 200:
                raise OpenAIError.from_reply(status, payload)
            await ex.reply(200, build_response(request, payload, request.model or self.served_model()))
        except OpenAIError as exc:
            if not ex.disconnected:
                await ex.fail(exc)
        except RequestError as exc:
            if not ex.disconnected:
                await ex.fail(OpenAIError.from_request_error(exc))
        finally:
            ex.close()
            ex.answered()


def build_response(request: EmbeddingRequest, payload: bytes, model: str) -> bytes:
    """OpenAI's embeddings response from what the worker's ``encode_response`` returned."""
    value = pydantic_core.from_json(payload)
    if isinstance(value, dict):
        vectors = value.get("embeddings")
        prompt_tokens = _count(value.get("prompt_tokens"))
        total_tokens = _count(value.get("total_tokens")) or prompt_tokens
    else:
        vectors, prompt_tokens, total_tokens = value, 0, 0
    expected = len(request.ensure_list())
    if not isinstance(vectors, list) or len(vectors) != expected or not all(_is_vector(v) for v in vectors):
        got = f"{len(vectors)} items" if isinstance(vectors, list) else type(vectors).__name__
        raise OpenAIError(500, f"{_RESPONSE_HELP}; got {got} for {expected} input(s)")
    data = []
    for i, vector in enumerate(vectors):
        if request.dimensions is not None:
            vector = shorten(vector, request.dimensions)
        embedding: list[float] | str = vector if request.encoding_format == "float" else to_base64(vector)
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": total_tokens}
    return pydantic_core.to_json({"object": "list", "data": data, "model": model, "usage": usage})


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _is_vector(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)


def shorten(vector: list[float], dimensions: int) -> list[float]:
    """The first ``dimensions`` values; renormalised to length 1 when the full vector had length 1."""
    if dimensions > len(vector):
        raise OpenAIError(400, f"dimensions={dimensions} is more than the model's {len(vector)}", param="dimensions")
    if dimensions == len(vector):
        return vector
    norm = math.sqrt(sum(x * x for x in vector))
    head = vector[:dimensions]
    if abs(norm - 1.0) < 1e-3:
        short = math.sqrt(sum(x * x for x in head))
        if short > 0:
            head = [x / short for x in head]
    return head


def to_base64(vector: list[float]) -> str:
    """Little-endian float32 bytes, base64: what ``openai`` decodes with ``np.frombuffer(..., "float32")``."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")

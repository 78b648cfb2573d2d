"""``OpenAISpec``: serve a ``LitAPI`` as OpenAI's chat completions (``POST /v1/chat/completions``).

What a user writes is LitServe's contract: ``predict`` is a generator; it receives the conversation
as a list of message dicts (or, when ``decode_request`` is written, the validated
``ChatCompletionRequest``) and yields strings or dicts (``role``, ``content``, ``tool_calls``,
``prompt_tokens``/``completion_tokens``/``total_tokens``, optionally ``finish_reason``). Each
request runs as one stream on a worker per choice (``n``); the app folds the chunks into a
``chat.completion`` or forwards them as ``chat.completion.chunk`` Server-Sent Events ending with
``data: [DONE]``. A client that leaves mid-stream cancels its calls: the worker closes the
generator at its next chunk.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pydantic_core
from starlette.routing import BaseRoute

from ..core.stepper import stepwise
from ..errors import ConfigurationError, RequestError
from . import sse
from .assembly import Completion, to_message
from .base import LitSpec
from .chat_models import (
    AudioContent,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionStreamingChoice,
    ChatMessage,
    ChatMessageWithUsage,
    ChoiceDelta,
    Function,
    FunctionCall,
    ImageContent,
    ImageContentURL,
    ImageDetail,
    InputAudio,
    JSONSchema,
    ModelList,
    ResponseFormat,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
    ResponseFormatText,
    StreamOptions,
    TextContent,
    Tool,
    ToolCall,
    ToolChoice,
    UsageInfo,
    completion_id,
)
from .exchange import Exchange, OpenAIError, SpecContext, openai_routes, parse_request

if TYPE_CHECKING:
    from ..api import LitAPI

logger = logging.getLogger("litserve")

__all__ = [
    "AudioContent",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatCompletionResponseChoice",
    "ChatCompletionStreamingChoice",
    "ChatMessage",
    "ChatMessageWithUsage",
    "ChoiceDelta",
    "Function",
    "FunctionCall",
    "ImageContent",
    "ImageContentURL",
    "ImageDetail",
    "InputAudio",
    "JSONSchema",
    "OpenAISpec",
    "ResponseFormat",
    "ResponseFormatJSONObject",
    "ResponseFormatJSONSchema",
    "ResponseFormatText",
    "StreamOptions",
    "TextContent",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "UsageInfo",
]

_EXAMPLE = """
    class MyLLM(ls.LitAPI):
        def setup(self, device):
            self.model = ...
        def predict(self, messages):
            for token in self.model.generate(messages):
                yield token            # a string, or {"role": "assistant", "content": ...}

    ls.LitServer(MyLLM(spec=ls.OpenAISpec()))"""


class OpenAISpec(LitSpec):
    """OpenAI's chat completions API for a LitAPI whose ``predict`` yields text.

    Args:
        model_name: the model id ``GET /v1/models`` lists and responses carry when a request names
            none. When given, a request naming another model gets 404 ``model_not_found``; when not,
            any name is accepted and echoed (the API's class name is listed).
    """

    stream = True

    def __init__(self, model_name: str | None = None) -> None:
        super().__init__()
        self.model_name = model_name

    # -- worker side (LitServe's hooks) ------------------------------------------------------------------
    def check(self, api: LitAPI) -> None:
        if stepwise(api):
            return  # continuous batching: join/step instead of a generator predict
        predict = api.predict
        if not (inspect.isgeneratorfunction(predict) or inspect.isasyncgenfunction(predict)):
            raise ConfigurationError(
                "OpenAISpec needs predict() to be a generator: yield the text (or message dicts) instead "
                "of returning it, e.g." + _EXAMPLE
            )

    def request_model(self) -> type[ChatCompletionRequest]:
        return ChatCompletionRequest

    def populate_context(self, context: dict[str, Any], request: Any) -> None:
        if isinstance(request, ChatCompletionRequest):
            context.update(request.context())

    def decode_request(self, request: ChatCompletionRequest) -> list[dict[str, Any]]:
        """The conversation as plain dicts: ``[{"role": "user", "content": "..."}, ...]``."""
        return [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in request.messages]

    def encode_response(self, outputs: Any) -> Iterator[Any] | AsyncIterator[Any]:
        """Each output as a message dict; in a batched stream, each step's list of outputs.

        An async generator ``predict`` gets an async generator back (the worker iterates it).
        """
        encode = self._encode_steps if self.batched and not stepwise(self.api) else to_message  # type: ignore[arg-type]
        if hasattr(outputs, "__aiter__"):
            return _amap(encode, outputs)
        return map(encode, outputs)

    @staticmethod
    def _encode_steps(step: Any) -> list[Any]:
        return [None if out is None else to_message(out) for out in step]

    def batch(self, inputs: list[Any]) -> list[Any]:
        return list(inputs)

    def unbatch(self, outputs: Any) -> Any:
        return outputs

    # -- app side ----------------------------------------------------------------------------------------
    def served_model(self) -> str:
        return self.model_name or (type(self.api).__name__ if self.api is not None else "litserve")

    def routes(self, ctx: SpecContext) -> list[BaseRoute]:
        return openai_routes("/v1/chat/completions", self._chat, ctx, self.served_model)

    def openapi_operations(self) -> dict[str, dict[str, Any]]:
        errors: dict[Any, Any] = {status: ("application/json", None) for status in (400, 401, 404, 413, 500, 503, 504)}
        return {
            "/v1/chat/completions": {
                "post": (
                    "Chat completion (text/event-stream of chat.completion.chunk when stream is true)",
                    ChatCompletionRequest,
                    {
                        200: ("application/json", ChatCompletionResponse),
                        "200 ": ("text/event-stream", ChatCompletionChunk),
                        **errors,
                    },
                )
            },
            "/v1/models": {"get": ("The models served", None, {200: ("application/json", ModelList)})},
        }

    async def _chat(self, ex: Exchange) -> None:
        try:
            ex.authorise()
            body = await ex.body()
            if body is None:  # never came (the client left, or a 408 was written): nothing to answer
                return
            request = self._validate(body)
            n = request.n
            # Each choice is one stream on a worker; it sees the request with n=1 (as in LitServe).
            one = body if n == 1 else pydantic_core.to_json({**pydantic_core.from_json(body), "n": 1})
            calls = await ex.submit([one] * n)
            completion = Completion(completion_id(), request.model or self.served_model(), n)
            if request.stream:
                include_usage = bool(request.stream_options and request.stream_options.include_usage)
                await _stream(ex, completion, calls, include_usage)
            else:
                await _unary(ex, completion, calls)
        except OpenAIError as exc:
            await _answer_error(ex, exc)
        except RequestError as exc:  # timeout, disconnect, shutdown
            if not ex.disconnected:
                await _answer_error(ex, OpenAIError.from_request_error(exc))
        finally:
            ex.close()
            ex.answered()

    def _validate(self, body: bytes) -> ChatCompletionRequest:
        return parse_request(ChatCompletionRequest, body, self.model_name)


async def _amap(fn: Any, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in items:
        yield fn(item)


async def _answer_error(ex: Exchange, exc: OpenAIError) -> None:
    if ex.disconnected:
        return
    if not ex.started:
        await ex.fail(exc)
    else:  # mid-stream: one error event, then the end (no [DONE]); the client raises APIError
        ex.status = exc.status
        await ex.write(sse.event(exc.body), more=False)


async def _unary(ex: Exchange, completion: Completion, calls: list[Any]) -> None:
    async def fold(index: int, call: Any) -> None:
        choice = completion.choices[index]
        async for payload in ex.chunks(call):
            choice.add(payload)

    if len(calls) == 1:
        await fold(0, calls[0])
    else:
        await asyncio.gather(*(fold(i, c) for i, c in enumerate(calls)))
    await ex.reply(200, completion.response())


async def _stream(ex: Exchange, completion: Completion, calls: list[Any], include_usage: bool) -> None:
    """Forward each choice's chunks as they come; headers wait for the first chunk, so an error
    before it (a bad request seen by decode_request, predict raising at once) keeps its status."""
    if len(calls) == 1:  # the common case: no merging, no queue hop per chunk
        choice = completion.choices[0]
        async for payload in ex.chunks(calls[0]):
            delta = choice.add(payload)
            if delta is not None:
                if not ex.started:
                    await ex.start_stream(sse.HEADERS)
                await ex.write(sse.event(completion.chunk(0, delta)))
        if not ex.started:
            await ex.start_stream(sse.HEADERS)
        await ex.write(sse.event(completion.finish_chunk(0)) + _tail(completion, include_usage), more=False)
        return
    # Bounded: a pump waits while the client is behind, so its call's chunks stay in the call, where
    # they count against stream_buffer and pause its worker (an unbounded queue would hold them all).
    queue: asyncio.Queue[tuple[int, bytes | BaseException | None]] = asyncio.Queue(len(calls))

    async def pump(index: int, call: Any) -> None:
        try:
            async for payload in ex.chunks(call):
                await queue.put((index, payload))
            await queue.put((index, None))
        except asyncio.CancelledError:  # the writer is gone: nobody would take what we put
            raise
        except BaseException as exc:  # noqa: B036 - handed to the writer, which re-raises it
            await queue.put((index, exc))

    tasks = [asyncio.ensure_future(pump(i, c)) for i, c in enumerate(calls)]
    try:
        open_choices = len(calls)
        while open_choices:
            index, item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if not ex.started:
                await ex.start_stream(sse.HEADERS)
            if item is None:
                open_choices -= 1
                await ex.write(sse.event(completion.finish_chunk(index)))
                continue
            delta = completion.choices[index].add(item)
            if delta is not None:
                await ex.write(sse.event(completion.chunk(index, delta)))
        await ex.write(_tail(completion, include_usage), more=False)
    finally:
        for task in tasks:
            task.cancel()


def _tail(completion: Completion, include_usage: bool) -> bytes:
    return sse.event(completion.usage_chunk()) + sse.DONE if include_usage else sse.DONE

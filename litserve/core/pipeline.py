"""The user's hooks, in order, written once for both worker loops.

decode each request → ``batch`` → ``predict`` → ``unbatch`` → encode each response (or, for a
stream: decode → ``predict`` → ``encode_response`` → one chunk at a time).

The order, the error handling (an exception becomes that request's error reply; the worker lives on)
and the request-id context (set around every hook, reset on every exit, cancellation included) are
written once, as a generator of *steps*: each ``yield`` hands out ``(function, args)`` and gets the
result back. Two tiny drivers run the steps: ``run_sync`` calls each function (the blocking loop of
a ``def predict`` API), ``run_async`` calls and awaits it when it returns an awaitable (the asyncio
loop of an ``async def predict`` API). An exception raised by a step is thrown back into the
generator at the ``yield``, so a plain ``try``/``except`` around the ``yield`` handles it.

Extending it (per-request context, callbacks, specs): ``unary`` (a batch or one request) and
``stream`` (one streaming request) are the only two places the hooks are called, each a straight
line through the phases; add to them there (kept flat, without nested generators, because every
request passes through here). A hook that may be ``async def`` must be *yielded*
(``value = yield hook, (arg,)``), never called directly, so both loops await it when they must; a
plain synchronous helper (a callback, a log) can be called directly.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from starlette.responses import Response

from ..api import LitAPI
from ..checks import missing_field
from ..context import reset_request_ids, set_request_ids
from ..errors import user_exception_reply
from . import hooks, responses
from . import protocol as P
from .codec import RequestDecoder, ResponseEncoder, blame_the_request

logger = logging.getLogger("litserve.worker")

T = TypeVar("T")
Step = tuple[Callable[..., Any], tuple[Any, ...]]
Steps = Generator[Step, Any, T]

CANCELLED = 499  # status of the terminal reply for a request the app gave up on; never sent to a client
_END = object()  # a stream is exhausted


class Pipeline:
    """One API's hooks with litserve's codecs around them.

    Args:
        api: the user's ``LitAPI`` (already ``setup``).
        emit: ``emit(rid, payload, status=200, tag=b"")`` sends one CHUNK for a request, like the
            ``emit`` of ``stream``; a unary request uses it only when ``encode_response`` returned a
            ``StreamingResponse`` or ``FileResponse`` (core/responses.py). None: such responses fail.
    """

    def __init__(self, api: LitAPI, emit: Callable[..., Any] | None = None) -> None:
        self.api = api
        self.emit = emit
        self.decode_body = RequestDecoder(api.request_model())
        self.encode_value = ResponseEncoder(api.response_model())
        self.batched = api.max_batch_size > 1
        # LitServe's extras (core/hooks.py), each None unless this API uses it, so the plain path
        # pays one ``is None`` test per stage for them.
        self.contextual = hooks.context_steps(api)
        # a spec (OpenAISpec) fills each request's context from its body before decode_request
        spec = getattr(api, "spec", None)
        self.populate = getattr(spec, "populate_context", None) if self.contextual is not None else None
        self.callbacks = hooks.callback_runner(api)

    # -- whole requests -------------------------------------------------------------------------------
    def unary(self, items: list[P.Item]) -> Steps[list[P.Reply]]:
        """One batch (or one request) to one terminal reply per item."""
        api, cb, steps = self.api, self.callbacks, self.contextual
        replies: list[P.Reply] = []
        inputs, ok, contexts = [], [], []
        for it in items:  # decode each
            token = set_request_ids((_id(it),))
            request = None
            try:
                body = request = self.decode_body(it.payload) if b"\n" not in it.tag else hooks.form_body(it)
                if cb is not None:
                    cb.trigger_event("on_before_decode_request", lit_api=api)
                if steps is None:
                    inputs.append((yield api.decode_request, (body,)))
                else:
                    context: dict[str, Any] = {}
                    if self.populate is not None:
                        self.populate(context, body)
                    inputs.append((yield steps[0], (body, context)))
                    contexts.append(context)
                if cb is not None:
                    cb.trigger_event("on_after_decode_request", lit_api=api)
                ok.append(it)
            except Exception as failure:
                exc = missing_field(failure, request)  # request["x"] on a body without "x": 422, not 500
                _log_user_error(exc, [it], "decode_request")
                replies.append((it.rid, *user_exception_reply(exc)))
            finally:
                reset_request_ids(token)
        if not ok:
            return replies
        token = set_request_ids(tuple(_id(it) for it in ok))
        try:  # batch -> predict -> unbatch, or predict alone
            if cb is not None:
                cb.trigger_event("on_before_predict", lit_api=api)
            if self.batched:
                batch = yield api.batch, (inputs,)
                if steps is None:
                    output = yield api.predict, (batch,)
                else:
                    output = yield steps[1], (batch, contexts)
                outputs = list((yield api.unbatch, (output,)))
                if len(outputs) != len(ok):
                    raise RuntimeError(f"unbatch() returned {len(outputs)} outputs for a batch of {len(ok)} requests")
            elif steps is None:
                outputs = [(yield api.predict, (inputs[0],))]
            else:
                outputs = [(yield steps[1], (inputs[0], contexts[0]))]
            if cb is not None:
                cb.trigger_event("on_after_predict", lit_api=api)
        except Exception as exc:
            _log_user_error(exc, ok, "predict")
            reply = user_exception_reply(exc)
            return replies + [(it.rid, *reply) for it in ok]
        finally:
            reset_request_ids(token)
        for i, (it, out) in enumerate(zip(ok, outputs, strict=True)):  # encode each
            token = set_request_ids((_id(it),))
            try:
                if cb is not None:
                    cb.trigger_event("on_before_encode_response", lit_api=api)
                if steps is None:
                    value = yield api.encode_response, (out,)
                else:
                    value = yield steps[2], (out, contexts[i])
                if isinstance(value, Response):  # rare: a Starlette/FastAPI response, sent as it is
                    replies.append((yield from self._response(it.rid, value)))
                else:
                    replies.append((it.rid, 200, self.encode_value(value)))
                if cb is not None:
                    cb.trigger_event("on_after_encode_response", lit_api=api)
            except Exception as exc:
                exc = blame_the_request(exc, it.payload)  # 1e999 in, infinity out: a 400, not a 500
                _log_user_error(exc, [it], "encode_response")
                replies.append((it.rid, *user_exception_reply(exc)))
            finally:
                reset_request_ids(token)
        return replies

    def _response(self, rid: int, response: Response) -> Steps[P.Reply]:
        """The reply for a ``Response`` from ``encode_response``; a streamed body goes out chunk by chunk."""
        in_loop = self.api.is_async
        if not isinstance(response, responses.STREAMED):
            reply: P.Reply = (rid, *responses.response_reply(response))
        else:
            emit = self.emit
            if emit is None:
                raise TypeError(f"a {type(response).__name__} cannot be sent from this API's worker")
            body = responses.body_of(response, in_loop)  # a file's size and date headers are set here
            try:
                tag = responses.headers_tag(response)
                if (yield emit, (rid, b"", response.status_code, tag)):  # the head: status and headers
                    return (rid, CANCELLED, b"")
                step = _anext if hasattr(body, "__aiter__") else _next
                while True:
                    chunk = yield step, (body,)
                    if chunk is _END:
                        break
                    if chunk and (yield emit, (rid, chunk)):
                        return (rid, CANCELLED, b"")
            finally:
                yield _close, (body,)
            reply = (rid, 200, b"")
        if response.background is not None:  # after the body, as Starlette runs it; the reply stands
            try:
                yield responses.background_step, (response.background, in_loop)
            except Exception:
                logger.error("the background task of a %s raised", type(response).__name__, exc_info=True)
        return reply

    def stream(self, it: P.Item, emit: Callable[[int, bytes], Any]) -> Steps[P.Reply]:
        """One streaming request: each encoded chunk goes out through ``emit(rid, payload)``.

        ``emit`` returns (or resolves to) True when the request was cancelled meanwhile; the stream
        then stops. Returns the terminal END reply. The user's generators are always closed.
        """
        api = self.api
        rid = it.rid
        token = set_request_ids((_id(it),))
        outputs = chunks = request = None
        cb, steps = self.callbacks, self.contextual
        try:
            body = request = self.decode_body(it.payload) if b"\n" not in it.tag else hooks.form_body(it)
            if cb is not None:
                cb.trigger_event("on_before_decode_request", lit_api=api)
            if steps is None:
                x = yield api.decode_request, (body,)
            else:
                context: dict[str, Any] = {}
                if self.populate is not None:
                    self.populate(context, body)
                x = yield steps[0], (body, context)
            if cb is not None:
                cb.trigger_event("on_after_decode_request", lit_api=api)
                cb.trigger_event("on_before_predict", lit_api=api)
            outputs = yield (api.predict, (x,)) if steps is None else (steps[1], (x, context))
            if cb is not None:
                cb.trigger_event("on_after_predict", lit_api=api)
                cb.trigger_event("on_before_encode_response", lit_api=api)
            chunks = yield (api.encode_response, (outputs,)) if steps is None else (steps[2], (outputs, context))
            if cb is not None:
                cb.trigger_event("on_after_encode_response", lit_api=api)
            step = _anext if hasattr(chunks, "__aiter__") else _next
            while True:
                value = yield step, (chunks,)
                if value is _END:
                    break
                if (yield emit, (rid, self.encode_value(value))):
                    return (rid, CANCELLED, b"")
        except Exception as failure:
            exc = missing_field(failure, request)  # request["x"] in decode_request, body without "x": 422
            exc = blame_the_request(exc, it.payload)  # 1e999 in, infinity out: a 400, not a 500
            _log_user_error(exc, [it], "stream")
            return (rid, *user_exception_reply(exc))
        finally:
            for gen in (chunks, outputs):
                if gen is not None:
                    try:
                        yield _close, (gen,)
                    except Exception:
                        logger.warning("closing the stream of request %s raised", _id(it), exc_info=True)
            reset_request_ids(token)
        return (rid, 200, b"")

    def stream_batch(self, items: list[P.Item], emit: Callable[[int, bytes], Any]) -> Steps[list[P.Reply]]:
        """A batch of streaming requests (``stream=True`` with ``max_batch_size > 1``), as LitServe runs it.

        ``predict`` receives the batch and yields one list per step, one item per request in batch
        order (``None``: nothing for that request this step); ``unbatch`` (default: each step as a list)
        and ``encode_response`` (a generator over the steps) see the steps in turn. A request whose
        ``emit`` reports it cancelled drops out: it gets no more chunks, and when none is left the
        generators are closed. Returns one terminal END reply per item.
        """
        api, contextual = self.api, self.contextual
        replies: list[P.Reply] = []
        inputs, ok, contexts = [], [], []
        for it in items:  # decode each
            token = set_request_ids((_id(it),))
            body = None
            try:
                body = self.decode_body(it.payload)
                if contextual is None:
                    inputs.append((yield api.decode_request, (body,)))
                else:
                    context: dict[str, Any] = {}
                    if self.populate is not None:
                        self.populate(context, body)
                    inputs.append((yield contextual[0], (body, context)))
                    contexts.append(context)
                ok.append(it)
            except Exception as failure:
                exc = missing_field(failure, body)
                _log_user_error(exc, [it], "decode_request")
                replies.append((it.rid, *user_exception_reply(exc)))
            finally:
                reset_request_ids(token)
        if not ok:
            return replies
        live = {it.rid for it in ok}
        token = set_request_ids(tuple(_id(it) for it in ok))
        outputs = steps = chunks = None
        try:
            batch = yield api.batch, (inputs,)
            outputs = yield (api.predict, (batch,)) if contextual is None else (contextual[1], (batch, contexts))
            steps = (yield api.unbatch, (outputs,)) if _overridden(api, "unbatch") else _each_as_list(outputs)
            if contextual is None:
                chunks = yield api.encode_response, (steps,)
            else:
                chunks = yield contextual[2], (steps, contexts)
            step = _anext if hasattr(chunks, "__aiter__") else _next
            while live:
                values = yield step, (chunks,)
                if values is _END:
                    break
                if not isinstance(values, (list, tuple)):
                    raise TypeError(
                        "in a batched stream each step must be a list with one item per request, "
                        f"got {type(values).__name__}"
                    )
                for it, value in zip(ok, values, strict=False):  # a short step: nothing for the rest
                    if value is not None and it.rid in live and (yield emit, (it.rid, self.encode_value(value))):
                        live.discard(it.rid)
                        replies.append((it.rid, CANCELLED, b""))
        except Exception as exc:
            _log_user_error(exc, ok, "stream")
            reply = user_exception_reply(exc)
            return replies + [(it.rid, *reply) for it in ok if it.rid in live]
        finally:
            for gen in (chunks, steps, outputs):
                if gen is not None:
                    try:
                        yield _close, (gen,)
                    except Exception:
                        logger.warning("closing a batched stream raised", exc_info=True)
            reset_request_ids(token)
        return replies + [(it.rid, 200, b"") for it in ok if it.rid in live]


# -- drivers ------------------------------------------------------------------------------------------
def run_sync(steps: Steps[T]) -> T:
    """Run ``steps`` by calling each function in turn (the blocking loop)."""
    try:
        fn, args = next(steps)
        while True:
            try:
                value = fn(*args)
            except Exception as exc:
                fn, args = steps.throw(exc)
            else:
                fn, args = steps.send(value)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(steps: Steps[T]) -> T:
    """Run ``steps``, awaiting each result that is awaitable (the asyncio loop).

    Cancellation is thrown into the steps too, so the pipeline resets its context and closes the
    user's generators before the ``CancelledError`` leaves.
    """
    try:
        fn, args = next(steps)
        while True:
            try:
                value = fn(*args)
                if inspect.isawaitable(value):
                    value = await value
            except BaseException as exc:
                fn, args = steps.throw(exc)
            else:
                fn, args = steps.send(value)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


# -- helpers ------------------------------------------------------------------------------------------
def _next(chunks: Any) -> Any:
    return next(chunks, _END)


async def _anext(chunks: Any) -> Any:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return _END


def _overridden(api: LitAPI, name: str) -> bool:
    """The user (or a spec, on the instance) wrote this hook; LitAPI's default does not apply."""
    return name in vars(api) or getattr(type(api), name) is not getattr(LitAPI, name)


def _each_as_list(outputs: Any) -> Any:
    """The default ``unbatch`` of a batched stream: each step of ``predict`` as a list."""
    if hasattr(outputs, "__aiter__"):

        async def agen() -> Any:
            async for out in outputs:
                yield list(out)

        return agen()
    return (list(out) for out in outputs)


def _close(gen: Any) -> Any:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        return aclose()
    close = getattr(gen, "close", None)
    if close is not None:
        close()
    return None


def _id(it: P.Item) -> str:
    tag = it.tag  # the request id, then b"\n" and the Content-Type for a form body
    return (tag if b"\n" not in tag else tag.partition(b"\n")[0]).decode("ascii", "replace")


def _log_user_error(exc: BaseException, items: list[P.Item], where: str) -> None:
    status = user_exception_reply(exc)[0]
    if status >= 500:
        logger.error("%s raised for request %s", where, ",".join(_id(it) for it in items), exc_info=exc)

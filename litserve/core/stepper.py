"""Continuous batching: requests join a running batch of streams at its next step, and leave it alone.

A generator ``predict`` over a batch (``stream=True``, ``max_batch_size > 1``) fixes its batch when it
starts: a request that arrives a moment later waits for the whole batch to finish. An API that
instead exposes its decoding loop one step at a time lets the worker change the batch between steps::

    join(x) -> state              # a request enters the batch (prefill); x is what decode_request returned
    step(states) -> outputs       # one step for every request in the batch: one output per state, in order;
                                  # an output of None means that request is finished
    leave(state)                  # optional: the request finished or its client left; free what it holds

This runner calls them: before every step it admits waiting requests (up to ``max_batch_size``) and
drops the ones whose client left (their ``leave`` runs, so the model stops computing for them); after
it, each output goes through ``encode_response`` and out as one chunk, all chunks of a step in one
message. The app sends such a worker a request as soon as it holds fewer than ``max_batch_size``, so
a new request waits at most one step, never a whole generation.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import zmq

from ..api import LitAPI
from ..context import reset_request_ids, set_request_ids
from ..errors import ConfigurationError, user_exception_reply
from . import protocol as P
from .inbox import Inbox
from .pipeline import CANCELLED, Pipeline

logger = logging.getLogger("litserve.worker")


def stepwise(api: LitAPI) -> bool:
    """Whether ``api`` is served by continuous batching (it defines ``step``, streams, and batches)."""
    return callable(getattr(api, "step", None)) and api.stream and api.max_batch_size > 1


def check_stepwise(api: LitAPI) -> None:
    """Refuse, at app creation, a step API that cannot run (called by LitAPI.check)."""
    import inspect

    for name in ("join", "step", "leave"):
        fn = getattr(api, name, None)
        if fn is not None and (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
            raise ConfigurationError(f"{name}() must be a plain def for continuous batching (async is not supported)")
    if not callable(getattr(api, "join", None)):
        raise ConfigurationError("an API with step() needs join(x) -> state too (see docs/openai.md)")


class StepRunner(Inbox):
    """The worker loop of a step API: admit, drop, step, send; block only when nothing is active."""

    def __init__(self, api: LitAPI, sock: zmq.Socket) -> None:
        super().__init__(sock)
        self.api = api
        self.pipeline = Pipeline(api)
        self.size = api.max_batch_size
        self.active: list[tuple[P.Item, Any]] = []  # (request, its state), in join order
        self.waiting: deque[P.Item] = deque()
        self.encode_each = "encode_response" in vars(api) or type(api).encode_response is not LitAPI.encode_response
        self._leave = getattr(api, "leave", None)

    def run(self) -> None:
        while not (self.stopping and not self.active and not self.waiting):
            if not self.active and not self.waiting:
                self.wait()  # idle: block until there is work
            self.drain()
            ends: list[P.Reply] = []
            self._drop_cancelled(ends)
            self._admit(ends)
            if self.active:
                self._step(ends)
            elif ends:
                self.send(P.END, ends)

    def accept(self, items: list[P.Item]) -> None:
        self.waiting.extend(items)

    # -- the batch --------------------------------------------------------------------------------------
    def _admit(self, ends: list[P.Reply]) -> None:
        api, pipeline = self.api, self.pipeline
        while self.waiting and len(self.active) < self.size:
            it = self.waiting.popleft()
            if it.rid in self.cancelled:
                ends.append((it.rid, CANCELLED, b""))
                continue
            token = set_request_ids((_id(it),))
            try:
                state = api.join(api.decode_request(pipeline.decode_body(it.payload)))  # type: ignore[attr-defined]
            except Exception as exc:
                _log(exc, [it], "join")
                ends.append((it.rid, *user_exception_reply(exc)))
                continue
            finally:
                reset_request_ids(token)
            self.active.append((it, state))

    def _drop_cancelled(self, ends: list[P.Reply]) -> None:
        if not self.cancelled or not self.active:
            return
        keep = []
        for it, state in self.active:
            if it.rid in self.cancelled:
                self._release(it, state)
                ends.append((it.rid, CANCELLED, b""))
            else:
                keep.append((it, state))
        self.active = keep

    def _step(self, ends: list[P.Reply]) -> None:
        active = self.active
        token = set_request_ids(tuple(_id(it) for it, _ in active))
        try:
            outputs = list(self.api.step([state for _, state in active]))  # type: ignore[attr-defined]
            if len(outputs) != len(active):
                raise RuntimeError(f"step() returned {len(outputs)} outputs for {len(active)} requests")
        except Exception as exc:
            _log(exc, [it for it, _ in active], "step")
            reply = user_exception_reply(exc)
            for it, state in active:
                self._release(it, state)
                ends.append((it.rid, *reply))
            self.active = []
            self.send(P.END, ends)
            return
        finally:
            reset_request_ids(token)
        chunks: list[P.Reply] = []
        keep = []
        for (it, state), out in zip(active, outputs, strict=True):
            if out is None:
                self._release(it, state)
                ends.append((it.rid, 200, b""))
                continue
            try:
                for payload in self._encode(it, out):
                    chunks.append((it.rid, 200, payload))
            except Exception as exc:
                _log(exc, [it], "encode_response")
                self._release(it, state)
                ends.append((it.rid, *user_exception_reply(exc)))
                continue
            keep.append((it, state))
        self.active = keep
        if chunks:
            self.send(P.CHUNK, chunks)
        if ends:
            self.send(P.END, ends)

    def _encode(self, it: P.Item, out: Any) -> list[bytes]:
        encode_value = self.pipeline.encode_value
        if not self.encode_each:
            return [encode_value(out)]
        token = set_request_ids((_id(it),))
        try:  # a streaming encode_response is a generator over outputs: give it this one
            return [encode_value(v) for v in self.api.encode_response(iter((out,)))]
        finally:
            reset_request_ids(token)

    def _release(self, it: P.Item, state: Any) -> None:
        if self._leave is None:
            return
        try:
            self._leave(state)
        except Exception:
            logger.warning("leave() raised for request %s", _id(it), exc_info=True)


def _id(it: P.Item) -> str:
    return it.tag.decode("ascii", "replace")


def _log(exc: BaseException, items: list[P.Item], where: str) -> None:
    if user_exception_reply(exc)[0] >= 500:
        logger.error("%s raised for request %s", where, ",".join(_id(it) for it in items), exc_info=exc)

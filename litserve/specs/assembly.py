"""From what ``predict`` yields to what an OpenAI client reads.

Two halves, on either side of the socket:

* in the worker, ``to_message`` turns each output (a string, a dict, a ``ChatMessage``) into one
  flat message dict — ``role``, ``content``, ``tool_calls``, the usage counts, ``finish_reason`` —
  which is the chunk that crosses the socket (LitServe's ``encode_response`` contract);
* in the app, ``Choice`` folds the chunks of one choice: into ``chat.completion.chunk`` events as
  they arrive, or into the final ``chat.completion`` message. Usage counts are summed over a
  choice's chunks and over the choices, so a model may report them once at the end or per chunk.
"""

from __future__ import annotations

import time
from typing import Any

import pydantic_core
from pydantic import BaseModel

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


class MalformedOutput(Exception):
    """``predict`` yielded something that is not a chat message; the client gets a 500 naming it."""

    status_code = 500

    def __init__(self, output: Any) -> None:
        text = repr(output)
        if len(text) > 200:
            text = text[:200] + "..."
        self.detail = (
            "Malformed output from LitAPI.predict: expected a string or a dict like "
            f"{{'role': 'assistant', 'content': '...'}}, got {text}"
        )
        super().__init__(self.detail)


def to_message(output: Any) -> dict[str, Any]:
    """One model output as a flat message dict (worker side)."""
    if output is None:
        return {"role": "assistant", "content": None}
    if isinstance(output, str):
        return {"role": "assistant", "content": output}
    if isinstance(output, BaseModel):
        output = output.model_dump(mode="json", exclude_none=True, by_alias=True)
    if isinstance(output, list) and output and isinstance(output[-1], (dict, BaseModel)):
        return to_message(output[-1])  # a conversation: its last message is the answer (LitServe)
    if isinstance(output, dict) and ("content" in output or "tool_calls" in output or _has_usage(output)):
        message = dict(output)
        message.setdefault("role", "assistant")
        return message
    raise MalformedOutput(output)


def _has_usage(d: dict[str, Any]) -> bool:
    return any(k in d for k in USAGE_KEYS)


class Usage:
    """Running token counts; ``total_tokens`` is prompt + completion when the model gave no total."""

    __slots__ = ("prompt", "completion", "total")

    def __init__(self) -> None:
        self.prompt = self.completion = self.total = 0

    def add(self, message: dict[str, Any]) -> None:
        prompt = _count(message.pop("prompt_tokens", 0))
        completion = _count(message.pop("completion_tokens", 0))
        total = _count(message.pop("total_tokens", 0))
        self.prompt += prompt
        self.completion += completion
        self.total += total or prompt + completion

    def merge(self, other: Usage) -> None:
        self.prompt += other.prompt
        self.completion += other.completion
        self.total += other.total

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt, "completion_tokens": self.completion, "total_tokens": self.total}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class Choice:
    """The chunks of one choice (one worker stream), folded as they arrive."""

    __slots__ = ("index", "usage", "parts", "tool_calls", "reasoning", "finish_reason", "role_sent")

    def __init__(self, index: int) -> None:
        self.index = index
        self.usage = Usage()
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.finish_reason: str | None = None
        self.role_sent = False

    def add(self, payload: bytes) -> dict[str, Any] | None:
        """Fold one chunk from the worker; returns its delta for a stream (None when it carries nothing)."""
        message = pydantic_core.from_json(payload)
        if not isinstance(message, dict):
            message = to_message(message)
        self.usage.add(message)
        reason = message.pop("finish_reason", None)
        if reason in FINISH_REASONS:
            self.finish_reason = reason
        delta: dict[str, Any] = {}
        if not self.role_sent:
            delta["role"] = "assistant"
            self.role_sent = True
        content = message.get("content")
        if isinstance(content, list):  # content parts: their text
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if isinstance(content, str) and content:
            delta["content"] = content
            self.parts.append(content)
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            delta["reasoning_content"] = reasoning
            self.reasoning.append(reasoning)
        calls = message.get("tool_calls")
        if calls:
            delta["tool_calls"] = [self._add_tool_call(i, call) for i, call in enumerate(calls)]
        return delta or None

    def _add_tool_call(self, position: int, call: dict[str, Any]) -> dict[str, Any]:
        """Record a tool call; a fragment (no ``id``) with a known ``index`` extends that call's arguments."""
        function = call.get("function") or {}
        index = call.get("index")
        if not isinstance(index, int):
            index = len(self.tool_calls) if call.get("id") else position
        known = next((c for c in self.tool_calls if c["index"] == index), None)
        if known is not None and not call.get("id"):
            known["function"]["arguments"] += function.get("arguments") or ""
            if function.get("name"):
                known["function"]["name"] = function["name"]
        else:
            known = {
                "index": index,
                "id": call.get("id") or f"call_{self.index}_{index}",
                "type": "function",
                "function": {"name": function.get("name") or "", "arguments": function.get("arguments") or ""},
            }
            self.tool_calls.append(known)
        return {**call, "index": index, "id": known["id"], "type": "function"}

    def final_reason(self) -> str:
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.parts) if self.parts or not self.tool_calls else None,
        }
        if self.tool_calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in self.tool_calls]
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        return message


class Completion:
    """Builds the JSON documents of one chat completion (all its choices share id, created, model)."""

    def __init__(self, id: str, model: str, n: int) -> None:
        self.id = id
        self.model = model
        self.created = int(time.time())
        self.choices = [Choice(i) for i in range(n)]
        self._head = (
            b'{"id":'
            + pydantic_core.to_json(id)
            + b',"object":"chat.completion.chunk","created":'
            + str(self.created).encode()
            + b',"model":'
            + pydantic_core.to_json(model)
            + b',"system_fingerprint":null,"choices":'
        )

    def usage(self) -> dict[str, int]:
        total = Usage()
        for choice in self.choices:
            total.merge(choice.usage)
        return total.as_dict()

    def chunk(self, index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._head + pydantic_core.to_json([choice]) + b',"usage":null}'

    def finish_chunk(self, index: int) -> bytes:
        return self.chunk(index, {}, self.choices[index].final_reason())

    def usage_chunk(self) -> bytes:
        return self._head + b'[],"usage":' + pydantic_core.to_json(self.usage()) + b"}"

    def response(self) -> bytes:
        return pydantic_core.to_json(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [
                    {"index": c.index, "message": c.message(), "logprobs": None, "finish_reason": c.final_reason()}
                    for c in self.choices
                ],
                "usage": self.usage(),
            }
        )

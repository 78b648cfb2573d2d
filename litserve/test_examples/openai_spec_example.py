"""Toy chat APIs for ``ls.OpenAISpec`` (LitServe's ``ls.test_examples.TestAPI`` and friends).

Serve one with ``ls.LitServer(ls.test_examples.TestAPI(), spec=ls.OpenAISpec())`` and point any
OpenAI client at ``/v1/chat/completions``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..api import LitAPI
from ..specs.chat_models import ChatMessage, ToolCall


class TestAPI(LitAPI):
    """Answers every chat with one fixed sentence."""

    __test__ = False  # not a pytest test class, whatever its name

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Iterator[str]:
        yield "This is a generated output"


class TestAPIWithCustomEncode(TestAPI):
    """Encodes its answer as a ``ChatMessage`` itself."""

    def encode_response(self, output: Any) -> Iterator[ChatMessage]:
        yield ChatMessage(role="assistant", content="This is a custom encoded output")


class TestAPIWithToolCalls(TestAPI):
    """Answers with one call of the tool ``function_1``."""

    def encode_response(self, output: Any) -> Iterator[ChatMessage]:
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "function_1", "arguments": '{"arg_1": "arg_1_value"}'},
        }
        yield ChatMessage(role="assistant", content="", tool_calls=[ToolCall.model_validate(call)])


class TestAPIWithStructuredOutput(TestAPI):
    """Answers with a JSON document as its content (for ``response_format`` clients)."""

    def encode_response(self, output: Any) -> Iterator[ChatMessage]:
        content = '{"name": "Science Fair", "date": "Friday", "participants": ["Alice", "Bob"]}'
        yield ChatMessage(role="assistant", content=content)


class OpenAIWithUsage(LitAPI):
    """Answers with one message that reports its token usage."""

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Iterator[dict[str, Any]]:
        yield {
            "role": "assistant",
            "content": "10 + 6 is equal to 16.",
            "prompt_tokens": 25,
            "completion_tokens": 10,
            "total_tokens": 35,
        }


class OpenAIBatchContext(LitAPI):
    """A batched streaming chat API that writes each request's ``context`` (use ``max_batch_size > 1``)."""

    WORDS = ("Hi!", "It's", "nice", "to", "meet", "you.")

    def setup(self, device: str) -> None:
        self.model = None

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def predict(self, inputs: list[Any], context: list[dict[str, Any]]) -> Iterator[list[str]]:  # type: ignore[override]
        for ctx in context:
            ctx["temperature"] = 1.0
        for word in self.WORDS:
            yield [word + " "] * len(inputs)

    def unbatch(self, output: Any) -> Any:
        return output

    def encode_response(  # type: ignore[override]
        self, output_stream: Any, context: list[dict[str, Any]]
    ) -> Iterator[list[dict[str, str]]]:
        for outputs in output_stream:
            yield [{"role": "assistant", "content": out} for out in outputs]


class OpenAIWithUsageEncodeResponse(LitAPI):
    """Tokens streamed one by one, then a last empty message with the counts."""

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Iterator[str]:
        yield from ["10", " +", " ", "6", " is", " equal", " to", " ", "16", "."]

    def encode_response(self, output: Any) -> Iterator[dict[str, Any]]:
        for out in output:
            yield {"role": "assistant", "content": out}
        yield {"role": "assistant", "content": "", "prompt_tokens": 25, "completion_tokens": 10, "total_tokens": 35}


class OpenAIBatchingWithUsage(OpenAIWithUsage):
    """The same answer for every request of a batch (use ``max_batch_size > 1``), then each one's counts."""

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def predict(self, x: list[Any]) -> Iterator[list[str]]:  # type: ignore[override]
        yield ["10 + 6 is equal to 16."] * len(x)

    def encode_response(  # type: ignore[override]
        self, output_stream: Any, context: list[dict[str, Any]]
    ) -> Iterator[list[dict[str, Any]]]:
        for outputs in output_stream:
            yield [{"role": "assistant", "content": out} for out in outputs]
        usage = {"role": "assistant", "content": "", "prompt_tokens": 25, "completion_tokens": 10, "total_tokens": 35}
        yield [dict(usage) for _ in context]

    def unbatch(self, output: Any) -> Any:
        return output

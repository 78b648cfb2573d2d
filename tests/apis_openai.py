"""LitAPIs served through the OpenAI specs in tests (importable by spawned workers)."""

from __future__ import annotations

import json
import os
import time

import litserve as ls
from litserve.specs.openai import ChatMessage


class EchoLLM(ls.LitAPI):
    """Yields the last user message back word by word, then its usage."""

    def setup(self, device):
        self.log = os.environ.get("LITSERVE_TEST_LOG")

    def predict(self, messages):
        text = messages[-1]["content"]
        if isinstance(text, list):
            text = " ".join(p.get("text", "") for p in text)
        if text == "raise":
            raise ValueError("the model refused")
        if text == "fail midway":
            yield "partial"
            raise RuntimeError("lost the GPU")
        if text.startswith("slow:"):  # slow:<tag>: one word per 50 ms until the client leaves, logging each
            tag = text[5:]
            for i in range(10_000):
                self._note(tag, i)
                yield f"w{i} "
                time.sleep(0.05)  # model behaviour: a slow generator
            return
        words = text.split(" ")
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word
        yield {"role": "assistant", "content": "", "prompt_tokens": len(messages), "completion_tokens": len(words)}

    def _note(self, tag, i):
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps({"tag": tag, "step": i}) + "\n")


class ToolLLM(ls.LitAPI):
    """Answers with a tool call when tools are offered (LitServe's encode_response style)."""

    def setup(self, device):
        pass

    def predict(self, messages):
        yield "calling"

    def encode_response(self, outputs):
        for _ in outputs:
            yield ChatMessage(
                role="assistant",
                content="",
                tool_calls=[
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            )


class RequestLLM(ls.LitAPI):
    """decode_request written by the user receives the validated ChatCompletionRequest."""

    def setup(self, device):
        pass

    def decode_request(self, request):
        return {"model": request.model, "temperature": request.temperature, "n_messages": len(request.messages)}

    def predict(self, x):
        yield json.dumps(x)


class HashEmbedder(ls.LitAPI):
    """A deterministic 8-dim unit vector per text; logs each predict call's inputs."""

    def setup(self, device):
        self.log = os.environ.get("LITSERVE_TEST_LOG")

    def predict(self, texts):
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps({"predict": texts}) + "\n")
        return [embed(t) for t in texts]


def embed(text) -> list[float]:
    raw = [float((sum(map(ord, str(text))) * (i + 1)) % 17 + 1) for i in range(8)]
    norm = sum(x * x for x in raw) ** 0.5
    return [x / norm for x in raw]


class CountingEmbedder(HashEmbedder):
    """LitServe's encode_response contract with token counts."""

    def encode_response(self, output):
        return {"embeddings": output, "prompt_tokens": 7, "total_tokens": 7}


class AsyncLLM(ls.LitAPI):
    """An async generator predict (several streams at once on one worker with max_concurrency)."""

    async def predict(self, messages):
        import asyncio

        for word in messages[-1]["content"].split(" "):
            await asyncio.sleep(0.01)  # model behaviour: awaiting an engine
            yield word + " "


class ContextLLM(ls.LitAPI):
    """predict(messages, context): LitServe's per-request context holds the request's other fields."""

    def predict(self, messages, context):
        yield json.dumps({"temperature": context["temperature"], "top_k": context.get("top_k"), "n": len(messages)})

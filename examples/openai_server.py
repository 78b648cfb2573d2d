"""An OpenAI-compatible chat server for a real (tiny, built in code) language model, with continuous batching.

    pip install torch==2.13.0            # CPU or CUDA build
    python examples/openai_server.py     # serves http://127.0.0.1:8000/v1

    curl -N http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": true, "max_tokens": 16}'

    python -c 'from openai import OpenAI; c = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x"); \\
               print(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}]))'

The model (``examples/tiny_llm.py``) is a 2-layer character-level transformer whose weights come
from a fixed seed: no weights are downloaded, it writes nonsense, and it costs what a real decoder
costs per token. The API uses continuous batching: ``join`` adds a request to the running batch,
``step`` advances every request in it by one token in one forward pass, so a request that arrives
mid-generation starts at the next step instead of waiting for the others to finish, and a client
that disconnects is removed before the next step. ``max_tokens`` (or ``max_completion_tokens``)
bounds each reply; the last chunk carries the token usage and ``finish_reason: "length"``.

Options: ``--port``, ``--host``, ``--max-batch-size`` (requests generating at once, default 16),
``--accelerator``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tiny_llm, also in spawned workers

import litserve as ls  # noqa: E402
from litserve.specs.openai import ChatCompletionRequest  # noqa: E402

DEFAULT_MAX_TOKENS = 32


class TinyChat(ls.LitAPI):
    def setup(self, device: str) -> None:
        import torch
        from tiny_llm import TinyLM

        torch.set_num_threads(1)  # one worker, one core: the batch is the parallelism
        self.model = TinyLM().to(device)
        self.generator = torch.Generator().manual_seed(0)

    def decode_request(self, request: ChatCompletionRequest) -> dict[str, Any]:
        from tiny_llm import prompt_of

        limit = request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS
        temperature = 0.8 if request.temperature is None else request.temperature
        return {"prompt": prompt_of([m.model_dump() for m in request.messages]), "max_tokens": limit, "t": temperature}

    # -- continuous batching ------------------------------------------------------------------------------
    def join(self, x: dict[str, Any]) -> dict[str, Any]:
        ids = self.model.encode(x["prompt"])
        return {"ids": ids, "prompt_tokens": len(ids), "produced": 0, "max_tokens": x["max_tokens"], "t": x["t"]}

    def step(self, states: list[dict[str, Any]]) -> list[Any]:
        live = [s for s in states if s["produced"] < s["max_tokens"]]
        tokens = iter(self.model.step([s["ids"] for s in live], generator=self.generator) if live else [])
        outputs: list[Any] = []
        for s in states:
            if s["produced"] >= s["max_tokens"]:
                outputs.append(None)  # finished last step
                continue
            token = next(tokens)
            s["ids"].append(token)
            s["produced"] += 1
            text = self.model.decode([token])
            if s["produced"] == s["max_tokens"]:  # the last token carries the usage
                outputs.append(
                    {
                        "content": text,
                        "prompt_tokens": s["prompt_tokens"],
                        "completion_tokens": s["produced"],
                        "finish_reason": "length",
                    }
                )
            else:
                outputs.append(text)
        return outputs

    def leave(self, state: dict[str, Any]) -> None:
        state["ids"] = []  # a real model frees its KV cache here


def build(max_batch_size: int = 16) -> TinyChat:
    return TinyChat(spec=ls.OpenAISpec(model_name="tiny"), stream=True, max_batch_size=max_batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a tiny language model with OpenAI's chat completions API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--accelerator", default="auto")
    args = parser.parse_args()
    server = ls.LitServer(build(args.max_batch_size), accelerator=args.accelerator, devices=1, timeout=60)
    server.run(host=args.host, port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()

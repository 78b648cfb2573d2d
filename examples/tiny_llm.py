"""A tiny character-level transformer language model, built in code (no weights are downloaded).

Its weights come from a fixed seed, so it writes fluent nonsense, deterministically: it is here to
be a real model with a real cost per token (embedding, causal self-attention, MLP, sampling) for
``examples/openai_server.py`` and ``benchmarks/bench_openai.py``, not to be clever.

``step(sequences)`` advances any number of sequences of different lengths by one token in one
forward pass (left-padded, with a padding mask), which is what continuous batching needs: a new
sequence joins the batch at the next step. ``generate`` is the plain one-sequence loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

VOCAB = [chr(c) for c in range(32, 127)]  # printable ASCII; index 0 (" ") doubles as padding
PAD = 0
MAX_LEN = 256


class TinyLM(nn.Module):
    def __init__(self, d_model: int = 64, heads: int = 4, layers: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.heads = heads
        self.embed = nn.Embedding(len(VOCAB), d_model)
        self.position = nn.Embedding(MAX_LEN, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout=0.0, batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, len(VOCAB))
        self.eval()

    # -- text <-> ids -------------------------------------------------------------------------------------
    @staticmethod
    def encode(text: str) -> list[int]:
        return [ord(c) - 32 if 32 <= ord(c) < 127 else PAD for c in text][-(MAX_LEN // 2) :] or [PAD]

    @staticmethod
    def decode(ids: list[int]) -> str:
        return "".join(VOCAB[i] for i in ids)

    # -- decoding -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(
        self, sequences: list[list[int]], temperature: float = 0.8, generator: torch.Generator | None = None
    ) -> list[int]:
        """The next token of every sequence, in one forward pass over the (left-padded) batch."""
        seqs = [s[-(MAX_LEN - 1) :] for s in sequences]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
        pad = torch.ones((len(seqs), width), dtype=torch.bool)
        for row, s in enumerate(seqs):
            ids[row, width - len(s) :] = torch.tensor(s)
            pad[row, width - len(s) :] = False
        device = self.head.weight.device
        ids, pad = ids.to(device), pad.to(device)
        positions = (~pad).long().cumsum(1).clamp(min=1) - 1
        x = self.embed(ids) + self.position(positions)
        # Attend to earlier, non-padding positions; each position also to itself, so a padding row is
        # never all-masked (that would make NaNs, which the value products would carry into real rows).
        causal = torch.ones(width, width, dtype=torch.bool, device=device).triu(1)
        blocked = causal.unsqueeze(0) | pad.unsqueeze(1)
        blocked &= ~torch.eye(width, dtype=torch.bool, device=device)
        h = self.blocks(x, mask=blocked.repeat_interleave(self.heads, dim=0))
        logits = self.head(h[:, -1, :]).float().cpu()  # sampling on the CPU: one small row per sequence
        if temperature <= 0:
            return logits.argmax(-1).tolist()
        probs = torch.softmax(logits / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1).tolist()

    def generate(self, prompt: str, max_tokens: int = 32, temperature: float = 0.8) -> Iterator[str]:
        """One sequence, token by token (what a plain streaming ``predict`` would call)."""
        seq = self.encode(prompt)
        for _ in range(max_tokens):
            token = self.step([seq], temperature)[0]
            seq.append(token)
            yield VOCAB[token]


def prompt_of(messages: list[dict]) -> str:
    """A chat as the model's prompt: one ``role: text`` line per message, then ``assistant:``."""
    lines = []
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        lines.append(f"{m.get('role', 'user')}: {content}")
    return "\n".join(lines) + "\nassistant:"

"""Specs: an API shaped as a well-known HTTP interface (OpenAI's chat completions and embeddings).

A spec on a ``LitAPI`` replaces its ``/predict`` route with the interface's routes, validates requests
as that interface defines them, and turns what ``predict`` returns into the interface's responses.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .openai import OpenAISpec
    from .openai_embedding import OpenAIEmbeddingSpec

__all__ = ("OpenAIEmbeddingSpec", "OpenAISpec")

# ``from litserve.specs import OpenAISpec`` as in LitServe; loaded on first use, so a worker that
# imports one spec module (or none) does not load the other's models.
_LAZY = {"OpenAISpec": "litserve.specs.openai", "OpenAIEmbeddingSpec": "litserve.specs.openai_embedding"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'litserve.specs' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

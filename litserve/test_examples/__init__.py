"""Small ``LitAPI`` classes that LitServe's docs and tests use (``ls.test_examples.SimpleLitAPI``).

They exist so a server file written against LitServe's docs runs unchanged here; they are also
handy for trying a deployment without a model.
"""

from .openai_spec_example import (
    OpenAIBatchContext,
    OpenAIWithUsage,
    TestAPI,
    TestAPIWithCustomEncode,
    TestAPIWithStructuredOutput,
    TestAPIWithToolCalls,
)
from .simple_example import SimpleBatchedAPI, SimpleLitAPI, SimpleStreamAPI, SimpleTorchAPI

__all__ = (
    "OpenAIBatchContext",
    "OpenAIWithUsage",
    "SimpleBatchedAPI",
    "SimpleLitAPI",
    "SimpleStreamAPI",
    "SimpleTorchAPI",
    "TestAPI",
    "TestAPIWithCustomEncode",
    "TestAPIWithStructuredOutput",
    "TestAPIWithToolCalls",
)

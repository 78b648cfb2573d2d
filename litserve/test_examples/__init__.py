"""Small ``LitAPI`` classes that LitServe's docs and tests use (``ls.test_examples.SimpleLitAPI``).

They exist so a server file written against LitServe's docs runs unchanged here; they are also
handy for trying a deployment without a model.
"""

from .simple_example import SimpleBatchedAPI, SimpleLitAPI, SimpleStreamAPI, SimpleTorchAPI

__all__ = ("SimpleBatchedAPI", "SimpleLitAPI", "SimpleStreamAPI", "SimpleTorchAPI")

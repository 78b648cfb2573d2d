"""``ls.Callback``: hooks around setup, each request's stages, and the server's life (LitServe's API).

Which hook runs where:

- in the worker process, with ``lit_api=``: ``on_before_setup`` / ``on_after_setup``, and for each
  request (or batch) ``on_before_decode_request`` … ``on_after_encode_response``;
- in the server process, with ``litserver=``: ``on_server_start`` (before the workers start),
  ``on_server_end`` (after they stop), ``on_request`` (a request reached the model route) and
  ``on_response`` (its response is about to be sent).

A callback object is copied into each worker (it travels with the API, so it must be picklable);
state it keeps there is per worker. An exception in a hook is logged and never fails the request.
"""

from __future__ import annotations

from .base import Callback, CallbackRunner, EventTypes, NoopCallback

__all__ = ("Callback", "CallbackRunner", "EventTypes", "NoopCallback")

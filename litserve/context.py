"""The request a hook is working on, readable from inside any user hook.

A context variable rather than an extra hook argument, so existing ``LitAPI`` signatures stay as the
seed wrote them and logging filters can read it too.
"""

from __future__ import annotations

from contextvars import ContextVar

_request_ids: ContextVar[tuple[str, ...]] = ContextVar("litserve_request_ids", default=())


def request_id() -> str | None:
    """The ``X-Request-ID`` of the request being handled, or None outside a request.

    Inside a batched ``batch``/``predict``/``unbatch`` call, where several requests are handled at
    once, this is None: use ``request_ids()``.
    """
    ids = _request_ids.get()
    return ids[0] if len(ids) == 1 else None


def request_ids() -> tuple[str, ...]:
    """The ids of every request in the current call (one, or the whole batch), in batch order."""
    return _request_ids.get()


def set_request_ids(ids: tuple[str, ...]) -> object:
    return _request_ids.set(ids)


def reset_request_ids(token: object) -> None:
    _request_ids.reset(token)  # type: ignore[arg-type]

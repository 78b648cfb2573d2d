"""Server-Sent Events framing, as OpenAI streams use it: ``data: <json>\\n\\n``, then ``data: [DONE]``.

One JSON object per event on a single line (JSON never contains a raw newline), so no event needs
the multi-line ``data:`` form; an error during a stream is one event whose data is the error object,
after which the stream ends without ``[DONE]`` (the ``openai`` client raises ``APIError`` on it).
"""

from __future__ import annotations

DONE = b"data: [DONE]\n\n"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx and friends must not buffer the stream
]


def event(data: bytes) -> bytes:
    """One SSE event carrying ``data`` (a single-line JSON document)."""
    return b"data: " + data + b"\n\n"


def parse(text: str) -> list[str]:
    """The ``data`` of each event in an SSE body (for tests and clients without an SSE library).

    Follows the SSE rules that matter here: events end at a blank line, ``data:`` lines of one event
    join with newlines, one space after the colon is dropped, comment lines (``:``) are skipped.
    """
    out: list[str] = []
    data: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            if data:
                out.append("\n".join(data))
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
    if data:
        out.append("\n".join(data))
    return out

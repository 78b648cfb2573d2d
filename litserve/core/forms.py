"""Form bodies (``multipart/form-data``, ``application/x-www-form-urlencoded``) parsed in the worker.

The app reads the body under ``max_payload_size`` as it streams in (the same limit as any body) and
passes it on as bytes with its content type; the worker turns it into the ``FormData`` that
``decode_request`` receives, as LitServe gives it: ``request["name"]`` is a ``str`` for a field and an
``UploadFile`` for a file (``.filename``, ``.content_type``, ``.file.read()``). Parsing here rather
than in the app keeps the app's event loop free and scales with the workers.
"""

from __future__ import annotations

import io
from urllib.parse import parse_qsl

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import FormData, Headers, UploadFile

from ..errors import BadRequest

FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")
MAX_PARTS = 1000  # fields + files in one body; beyond it, 400 (as Starlette's defaults)


def is_form(content_type: bytes) -> bool:
    """Whether a request with this Content-Type carries a form (decided on the app side)."""
    return content_type.split(b";", 1)[0].strip().lower() in FORM_TYPES


def parse_form(body: bytes, content_type: bytes) -> FormData:
    """The form in ``body``; raises BadRequest for a malformed one."""
    media, options = parse_options_header(content_type)
    if media == b"application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_PARTS)
        except ValueError as exc:
            raise BadRequest(f"Invalid form body: {exc}") from None
        return FormData(list[tuple[str, str | UploadFile]](pairs))
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data body without a boundary in its Content-Type")
    return _Multipart(boundary).parse(body)


class _Multipart:
    def __init__(self, boundary: bytes) -> None:
        self.boundary = boundary
        self.items: list[tuple[str, str | UploadFile]] = []
        self.header_name = b""
        self.header_value = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.data = bytearray()

    def parse(self, body: bytes) -> FormData:
        callbacks = {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
        }
        try:
            parser = MultipartParser(self.boundary, callbacks)  # type: ignore[arg-type]
            parser.write(body)
            parser.finalize()
        except BadRequest:
            raise
        except Exception as exc:  # python-multipart's parse errors
            raise BadRequest(f"Invalid multipart body: {exc}") from None
        return FormData(self.items)

    def on_part_begin(self) -> None:
        if len(self.items) >= MAX_PARTS:
            raise BadRequest(f"too many parts in the form (limit {MAX_PARTS})")
        self.headers = []
        self.data = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.data.extend(data[start:end])

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers.append((self.header_name.lower(), self.header_value))
        self.header_name = self.header_value = b""

    def on_part_end(self) -> None:
        disposition = next((v for k, v in self.headers if k == b"content-disposition"), None)
        if disposition is None:
            raise BadRequest("a multipart part has no Content-Disposition header")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            filename = options[b"filename"].decode("utf-8", "replace")
            headers = Headers(raw=self.headers)
            upload = UploadFile(io.BytesIO(bytes(self.data)), size=len(self.data), filename=filename, headers=headers)
            self.items.append((name, upload))
        else:
            self.items.append((name, self.data.decode("utf-8", "replace")))

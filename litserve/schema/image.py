"""``ImageInput`` / ``ImageOutput``: images as base64 strings in JSON bodies (needs Pillow).

Annotate ``decode_request(self, request: ImageInput)`` and the body is validated as
``{"image_data": "<base64>"}`` before the worker sees it; return ``ImageOutput(image=pil_image)``
from ``encode_response`` and it goes out as ``{"image": "<base64 PNG>"}``.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, field_serializer

if TYPE_CHECKING:
    from PIL.Image import Image


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("ImageInput/ImageOutput need Pillow: pip install Pillow") from None
    return Image


class ImageInput(BaseModel):
    """A request carrying one image, base64-encoded, in ``image_data``."""

    image_data: str

    def get_image(self) -> Image:
        """The decoded image; a body that is not base64 raises ``ValueError`` (a 500 unless caught)."""
        try:
            raw = base64.b64decode(self.image_data, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"image_data is not valid base64: {exc}") from None
        return _pil().open(io.BytesIO(raw))


class ImageOutput(BaseModel):
    """A response carrying one PIL image, serialised as a base64 PNG string."""

    image: Any

    @field_serializer("image")
    def _serialize_image(self, image: Any) -> str:
        if not isinstance(image, _pil().Image):
            raise TypeError(f"ImageOutput.image must be a PIL image, got {type(image).__name__}")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

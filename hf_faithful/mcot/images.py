"""Images of the thinking-with-images protocol: read any image cell as RGB, embed an image
as a PNG data URI, keep an image under a size limit.

Traces, datasets, endpoints and the inspector Space all meet images in these forms, so
they are converted here once.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from PIL import Image

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "fit_image", "load_image", "png_data_uri"]

# PIL's own default limit (``Image.MAX_IMAGE_PIXELS``, about 89 megapixels).
DEFAULT_MAX_IMAGE_PIXELS: int | None = Image.MAX_IMAGE_PIXELS
# Guards the moments PIL's global limit is lifted so that ``max_image_pixels`` rules.
_PIL_LIMIT_LOCK = threading.Lock()


def _too_large(size: tuple[int, int], max_image_pixels: int) -> ValueError:
    width, height = size
    return ValueError(
        f"image is {width}x{height} = {width * height:,} pixels, more than "
        f"max_image_pixels={max_image_pixels:,} (a guard against decompression bombs; "
        "raise the limit, or pass None, to read it)"
    )


def _open(source: str | os.PathLike | IO[bytes], max_image_pixels: int | None) -> Image.Image:
    """``Image.open`` with ``max_image_pixels`` as the only limit: PIL's check (a warning
    above ``Image.MAX_IMAGE_PIXELS``, DecompressionBombError above twice that, neither a
    ValueError) is lifted while opening when the caller allows more, and a too large image
    is a ValueError either way, so a reader can keep it as one bad record."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    lift = pil_limit is not None and (max_image_pixels is None or max_image_pixels > pil_limit)
    try:
        if lift:
            with _PIL_LIMIT_LOCK:
                Image.MAX_IMAGE_PIXELS = None
                try:
                    image = Image.open(source)
                finally:
                    Image.MAX_IMAGE_PIXELS = pil_limit
        else:
            image = Image.open(source)
    except Image.DecompressionBombError as err:
        # only reached when max_image_pixels <= PIL's limit, so the image exceeds both
        raise ValueError(
            f"image has more than max_image_pixels={max_image_pixels:,} pixels: {err}"
        ) from None
    if max_image_pixels is not None and image.size[0] * image.size[1] > max_image_pixels:
        image.close()
        raise _too_large(image.size, max_image_pixels)
    return image


def load_image(
    value: Any,
    base_dir: str | os.PathLike | None = None,
    *,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> Image.Image:
    """An RGB PIL image from a PIL image, a path (relative to ``base_dir``), a data URI,
    raw bytes, or a ``datasets`` image dict (``{"bytes": ..., "path": ...}``).

    A file or bytes holding more than ``max_image_pixels`` pixels (default: PIL's limit;
    None: no limit) is refused before it is decoded. Raises FileNotFoundError for a
    missing file and ValueError for anything else unreadable, too large included.
    """
    if max_image_pixels is not None and max_image_pixels < 1:
        raise ValueError(f"max_image_pixels must be >= 1 or None, got {max_image_pixels}")
    if isinstance(value, Image.Image):
        return value.convert("RGB") if value.mode != "RGB" else value
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return load_image(value["bytes"], base_dir, max_image_pixels=max_image_pixels)
        if value.get("path"):
            return load_image(value["path"], base_dir, max_image_pixels=max_image_pixels)
        raise ValueError(f"image dict needs 'bytes' or 'path', got keys {sorted(value)}")
    if isinstance(value, bytes | bytearray):
        image = _open(io.BytesIO(value), max_image_pixels)
    elif isinstance(value, str | os.PathLike):
        value = os.fspath(value)
        if value.startswith("data:"):
            data = base64.b64decode(value.split(",", 1)[1])
            image = _open(io.BytesIO(data), max_image_pixels)
        else:
            path = Path(value)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            if not path.is_file():
                raise FileNotFoundError(f"image file not found: {path}")
            image = _open(path, max_image_pixels)
    else:
        raise ValueError(f"cannot read an image from {type(value).__name__}")
    image.load()
    return image.convert("RGB")


def png_data_uri(image: Image.Image) -> str:
    """``data:image/png;base64,...``: how images travel in JSON records and chat requests."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def fit_image(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` as RGB, downscaled (aspect kept) so that its longest side is at most
    ``max_side``; smaller images are returned as they are (never upscaled)."""
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    image = image.convert("RGB") if image.mode != "RGB" else image
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    return image

"""Images of the thinking-with-images protocol: read any image cell as RGB, embed an image
as a PNG data URI, keep an image under a size limit.

Traces, datasets, endpoints and the inspector Space all meet images in these forms, so
they are converted here once.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["fit_image", "load_image", "png_data_uri"]


def load_image(value: Any, base_dir: str | os.PathLike | None = None) -> Image.Image:
    """An RGB PIL image from a PIL image, a path (relative to ``base_dir``), a data URI,
    raw bytes, or a ``datasets`` image dict (``{"bytes": ..., "path": ...}``).

    Raises FileNotFoundError for a missing file and ValueError for anything else unreadable.
    """
    if isinstance(value, Image.Image):
        return value.convert("RGB") if value.mode != "RGB" else value
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return load_image(value["bytes"], base_dir)
        if value.get("path"):
            return load_image(value["path"], base_dir)
        raise ValueError(f"image dict needs 'bytes' or 'path', got keys {sorted(value)}")
    if isinstance(value, bytes | bytearray):
        image = Image.open(io.BytesIO(value))
    elif isinstance(value, str | os.PathLike):
        value = os.fspath(value)
        if value.startswith("data:"):
            image = Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1])))
        else:
            path = Path(value)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            if not path.is_file():
                raise FileNotFoundError(f"image file not found: {path}")
            image = Image.open(path)
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

"""The zoom-in tool of "thinking with images" models: validate a box, crop the original image.

Validation follows DeepEyes' ``image_zoom_in_tool``: the box is clamped to the image, then
rejected when inverted or empty, when a side is not longer than ``min_side`` pixels
(DeepEyes asserts ``min(height, width) > 30``), or when its aspect ratio exceeds
``max_aspect_ratio``. Qwen2.5-VL emits absolute pixel coordinates,
Qwen3-VL coordinates normalized to 0..1000; ``BoxRules.coords`` says which.

DeepEyes' later tool (v5) and its evaluation handle crops differently, and a model is
measured under the rules it was trained with: ``BoxRules.enlarge_below`` scales a tiny box
about its centre instead of refusing it, ``BoxRules.crop_resize="smart_resize"`` resizes
the crop to multiples of 28 pixels as DeepEyes' evaluation does (see
:func:`enlarge_box` and :func:`smart_resize`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

__all__ = [
    "Box",
    "BoxRules",
    "InvalidBoxError",
    "enlarge_box",
    "finish_crop",
    "normalize_box",
    "smart_resize",
    "zoom_in",
]


class InvalidBoxError(ValueError):
    """A bounding box the zoom-in tool refuses; the message names the problem."""


@dataclass(frozen=True)
class BoxRules:
    """How boxes are read and which ones are refused.

    Args:
        coords: ``"absolute"`` pixels (Qwen2.5-VL) or ``"normalized_1000"`` (Qwen3-VL).
        min_side: every side must be longer than this many pixels after clamping
            (DeepEyes: 30, i.e. a 30-px side is refused, a 31-px side accepted).
        max_aspect_ratio: longest side over shortest side (DeepEyes: 100).
        clamp: clip the box to the image first (DeepEyes does); if False a box reaching
            outside the image is refused.
        enlarge_below: when > 0, a box with a side shorter than this many pixels is scaled
            about its centre until that side reaches it, instead of being refused
            (DeepEyes v5: 28); the enlarged box may reach past the image, whose crop is
            then padded black, as PIL does in DeepEyes.
        crop_resize: ``"smart_resize"`` resizes each crop (bicubic) to multiples of 28
            pixels within 4*28*28 .. 16384*28*28 pixels, as DeepEyes' evaluation does.
    """

    coords: Literal["absolute", "normalized_1000"] = field(
        default="absolute",
        metadata={
            "help": "box coordinates: Qwen2.5-VL absolute pixels or Qwen3-VL 0..1000",
        },
    )
    min_side: int = field(
        default=30, metadata={"help": "boxes need sides longer than this, as DeepEyes"}
    )
    max_aspect_ratio: float = field(
        default=100.0, metadata={"help": "boxes more elongated than this are refused"}
    )
    clamp: bool = field(
        default=True, metadata={"help": "clip a box to the image before validating it"}
    )
    enlarge_below: int = field(
        default=0,
        metadata={
            "help": "enlarge boxes with a side shorter than this (px) about their centre "
            "instead of refusing them (DeepEyes v5: 28); 0 = off"
        },
    )
    crop_resize: Literal["none", "smart_resize"] = field(
        default="none",
        metadata={"help": "resize crops: 'smart_resize' to multiples of 28 px (DeepEyes eval)"},
    )

    def __post_init__(self) -> None:
        if self.coords not in ("absolute", "normalized_1000"):
            raise ValueError(
                f"BoxRules.coords must be 'absolute' or 'normalized_1000', got {self.coords!r}"
            )
        if self.min_side < 0:
            raise ValueError(f"BoxRules.min_side must be >= 0, got {self.min_side}")
        if not self.max_aspect_ratio >= 1:
            raise ValueError(f"BoxRules.max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}")
        if self.enlarge_below < 0:
            raise ValueError(f"BoxRules.enlarge_below must be >= 0, got {self.enlarge_below}")
        if self.crop_resize not in ("none", "smart_resize"):
            raise ValueError(
                f"BoxRules.crop_resize must be 'none' or 'smart_resize', got {self.crop_resize!r}"
            )


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``(x1, y1, x2, y2)``, left/top inclusive, right/bottom exclusive."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other`` (0 when either is empty)."""
        inter = Box(
            max(self.x1, other.x1), max(self.y1, other.y1),
            min(self.x2, other.x2), min(self.y2, other.y2),
        ).area  # fmt: skip
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    @classmethod
    def from_any(cls, value: Any) -> Box:
        """Read a box from a ``Box``, 4 numbers, or a mapping with ``bbox_2d`` or x1..y2 keys.

        Only the shape and the numbers are checked here (length, numeric, finite);
        ``normalize_box`` checks the geometry against an image.
        """
        if isinstance(value, Box):
            return value
        if isinstance(value, Mapping):
            if "bbox_2d" in value:
                return cls.from_any(value["bbox_2d"])
            if all(k in value for k in ("x1", "y1", "x2", "y2")):
                value = [value["x1"], value["y1"], value["x2"], value["y2"]]
            else:
                raise InvalidBoxError(
                    f"box mapping needs 'bbox_2d' or x1/y1/x2/y2 keys, got keys {sorted(value)}"
                )
        if hasattr(value, "tolist") and not isinstance(value, str | bytes):
            value = value.tolist()  # numpy arrays, torch tensors
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise InvalidBoxError(
                f"box must be a list of 4 numbers [x1, y1, x2, y2], got {type(value).__name__}"
            )
        if len(value) != 4:
            raise InvalidBoxError(
                f"box must have 4 numbers [x1, y1, x2, y2], got {len(value)}: {list(value)!r}"
            )
        coords = []
        for name, v in zip(("x1", "y1", "x2", "y2"), value):
            if isinstance(v, bool):
                raise InvalidBoxError(f"box {name} is not a number: {v!r}")
            if not isinstance(v, int | float):
                try:  # numpy scalars, numeric strings from sloppy JSON
                    v = float(v)
                except (TypeError, ValueError):
                    raise InvalidBoxError(f"box {name} is not a number: {v!r}") from None
            if not math.isfinite(v):
                raise InvalidBoxError(f"box {name} is not finite: {v!r}")
            coords.append(float(v))
        return cls(*coords)


def normalize_box(bbox: Any, image_size: tuple[int, int], rules: BoxRules | None = None) -> Box:
    """Convert ``bbox`` to absolute pixels of an image of ``(width, height)``, clamp, validate.

    Raises:
        InvalidBoxError: naming the problem (not a number, wrong length, outside the
            image, inverted, zero area, too small, extreme aspect ratio).
    """
    rules = rules or BoxRules()
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size}")
    box = Box.from_any(bbox)
    if rules.coords == "normalized_1000":
        box = Box(
            box.x1 * width / 1000.0,
            box.y1 * height / 1000.0,
            box.x2 * width / 1000.0,
            box.y2 * height / 1000.0,
        )
    raw = box.to_list()
    if box.x1 > box.x2 or box.y1 > box.y2:
        raise InvalidBoxError(f"box is inverted (needs x1 < x2 and y1 < y2): {raw}")
    if box.x1 == box.x2 or box.y1 == box.y2:
        raise InvalidBoxError(f"box has zero area: {raw}")
    if rules.clamp:
        box = Box(max(box.x1, 0.0), max(box.y1, 0.0), min(box.x2, width), min(box.y2, height))
        if box.width <= 0 or box.height <= 0:
            raise InvalidBoxError(f"box {raw} lies outside the {width}x{height} image")
    elif box.x1 < 0 or box.y1 < 0 or box.x2 > width or box.y2 > height:
        raise InvalidBoxError(f"box {raw} reaches outside the {width}x{height} image")
    short, long = sorted((box.width, box.height))
    if short < rules.enlarge_below:  # DeepEyes v5 checks the aspect before and after
        _check_aspect(raw, short, long, rules)
        box = enlarge_box(box, rules.enlarge_below)
        short, long = sorted((box.width, box.height))
    if short <= rules.min_side:
        raise InvalidBoxError(
            f"box {raw} is too small: side {short:g} px, needs > min_side {rules.min_side} px"
        )
    _check_aspect(raw, short, long, rules)
    return box


def _check_aspect(raw: list[float], short: float, long: float, rules: BoxRules) -> None:
    if long / short > rules.max_aspect_ratio:
        raise InvalidBoxError(
            f"box {raw} has aspect ratio {long / short:.1f} > max_aspect_ratio "
            f"{rules.max_aspect_ratio:g}"
        )


def enlarge_box(box: Box, side: int) -> Box:
    """``box`` scaled about its centre so that its shorter side is ``side`` pixels, on
    integer pixels, as ``maybe_resize_bbox`` in DeepEyes'
    ``verl/workers/agent/envs/mm_process_engine/visual_toolbox_v5.py``: a tiny box the
    model asked for becomes a small crop around the same point instead of an error."""
    ratio = side / min(box.width, box.height)
    cx, cy = (box.x1 + box.x2) / 2.0, (box.y1 + box.y2) / 2.0
    half_w, half_h = math.ceil(box.width * ratio * 0.5), math.ceil(box.height * ratio * 0.5)
    return Box(
        float(math.floor(cx - half_w)),
        float(math.floor(cy - half_h)),
        float(math.ceil(cx + half_w)),
        float(math.ceil(cy + half_h)),
    )


# qwen-vl-utils' smart_resize as copied into DeepEyes' eval/eval_vstar.py
IMAGE_FACTOR = 28
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28


def smart_resize(
    height: int,
    width: int,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """``(height, width)`` rounded to multiples of ``factor`` with the pixel count within
    ``min_pixels .. max_pixels`` (aspect ratio kept), as DeepEyes' ``eval/eval_vstar.py``
    (from qwen-vl-utils) resizes every crop before sending it."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _pixel_box(box: Box, image_size: tuple[int, int], clip: bool) -> tuple[int, int, int, int]:
    """Integer crop covering the whole (fractional) box, within the image when ``clip``."""
    x1, y1 = math.floor(box.x1), math.floor(box.y1)
    x2, y2 = math.ceil(box.x2), math.ceil(box.y2)
    if not clip:
        return x1, y1, x2, y2
    width, height = image_size
    return max(0, x1), max(0, y1), min(width, x2), min(height, y2)


def finish_crop(crop: Image.Image, rules: BoxRules | None = None) -> Image.Image:
    """A crop as the tool hands it to the model (``rules.crop_resize``); interventions
    that cut new crops (``other_region``) pass theirs through it too."""
    if rules is None or rules.crop_resize == "none":
        return crop
    height, width = smart_resize(crop.height, crop.width)
    if (width, height) == crop.size:
        return crop
    return crop.resize((width, height), resample=Image.BICUBIC)


def zoom_in(image: Image.Image, bbox: Any, rules: BoxRules | None = None) -> Image.Image:
    """Crop the original ``image`` to ``bbox`` after ``normalize_box``; raises InvalidBoxError."""
    box = normalize_box(bbox, image.size, rules)
    clip = rules is None or rules.enlarge_below == 0  # DeepEyes v5 pads enlarged boxes
    return finish_crop(image.crop(_pixel_box(box, image.size, clip)), rules)

"""The DeepEyes-style zoom-in tool as a TRL environment (``GRPOTrainer(environment_factory=...)``).

TRL creates one instance per rollout, calls ``reset(**row)`` with the dataset row, and
exposes every public method as a tool, so the only public methods here are ``reset`` and
``image_zoom_in_tool``. The instance doubles as the rollout's record of its crops, which
the SCCM rewards read through the ``environments`` keyword TRL passes to reward functions.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from hf_faithful.mcot.images import load_image
from hf_faithful.mcot.zoom import Box, BoxRules, InvalidBoxError, normalize_box, zoom_in


def _as_image(value: Any, column: str) -> Image.Image:
    """A dataset cell (PIL image, ``{"bytes"|"path"}`` dict from parquet, or a path) as RGB
    PIL; a cell of another type is a TypeError naming the column."""
    if not isinstance(value, Image.Image | dict | str):
        raise TypeError(
            f"column {column!r} must hold a PIL image, an image path or a {{'bytes'|'path'}} dict, "
            f"got {type(value).__name__}"
        )
    return load_image(value)


class ZoomInEnvironment:
    """One rollout's zoom-in tool and the record of what it cropped.

    Args:
        rules: how boxes are read (absolute or 0..1000 coordinates) and which are refused.
        image_column: row field with the full image (falls back to the first of ``"images"``).
        question_column: row field with the question (kept for the sufficiency query).
        answer_column: row field with the reference answer (``None`` when absent).

    After a rollout: ``boxes`` and ``crops`` hold the valid zoom-ins in order, ``calls`` and
    ``failed_calls`` count the tool calls that reached the tool, ``errors`` their messages.
    A refused box never crashes training: the tool raises, TRL catches the error, sends it
    back to the model as the tool response and counts it in ``tools/failure_frequency``.
    """

    def __init__(
        self,
        rules: BoxRules | None = None,
        image_column: str = "image",
        question_column: str = "question",
        answer_column: str = "answer",
    ):
        self.rules = rules or BoxRules()
        self.image_column = image_column
        self.question_column = question_column
        self.answer_column = answer_column
        self.image: Image.Image | None = None
        self.question: str | None = None
        self.reference: str | None = None
        self.boxes: list[Box] = []
        self.crops: list[Image.Image] = []
        self.calls = 0
        self.failed_calls = 0
        self.errors: list[str] = []
        # Filled in by the sufficiency reward, read by the minimality reward.
        self.sufficient: bool | None = None
        self.sufficiency_answer: str | None = None
        self.scored = False

    def reset(self, **row: Any) -> None:
        """Start a rollout on ``row`` (a dataset example); returns None (the prompt is unchanged)."""
        if row.get(self.image_column) is not None:
            self.image = _as_image(row[self.image_column], self.image_column)
        elif row.get("images"):
            self.image = _as_image(row["images"][0], "images")
        else:
            raise ValueError(
                f"ZoomInEnvironment needs an image: the row has no {self.image_column!r} or 'images' "
                f"field (fields: {sorted(row)})"
            )
        question = row.get(self.question_column)
        self.question = None if question is None else str(question)
        reference = row.get(self.answer_column)
        self.reference = (
            None if reference is None or str(reference).strip() == "" else str(reference)
        )
        self.boxes = []
        self.crops = []
        self.calls = 0
        self.failed_calls = 0
        self.errors = []
        self.sufficient = None
        self.sufficiency_answer = None
        self.scored = False
        return None

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the full image."""
        if self.image is None:
            raise RuntimeError("ZoomInEnvironment.reset() has not been called")
        return self.image.size

    def image_zoom_in_tool(
        self, bbox_2d: list[float] | None = None, label: str | None = None
    ) -> list:
        """
        Zoom in on a region of the image to see its details.

        Args:
            bbox_2d: The region as [x1, y1, x2, y2]: top-left and bottom-right corners, in absolute pixels for Qwen2.5-VL or normalized to 0-1000 for Qwen3-VL.
            label: The name of the object or detail in the region (optional).

        Returns:
            The cropped region of the original image.
        """
        if self.image is None:
            raise RuntimeError("ZoomInEnvironment.reset() has not been called")
        self.calls += 1
        try:
            if bbox_2d is None:
                raise InvalidBoxError("missing argument bbox_2d: [x1, y1, x2, y2]")
            box = normalize_box(bbox_2d, self.image.size, self.rules)
            crop = zoom_in(self.image, box, BoxRules(coords="absolute", min_side=0))
        except InvalidBoxError as err:
            self.failed_calls += 1
            self.errors.append(str(err))
            raise
        self.boxes.append(box)
        self.crops.append(crop)
        return [{"type": "image", "image": crop}]

"""The DeepEyes-style zoom-in tool as a TRL environment (``GRPOTrainer(environment_factory=...)``).

TRL creates one instance per rollout, calls ``reset(**row)`` with the dataset row, and
exposes every public method as a tool, so the only public methods here are ``reset`` and
``image_zoom_in_tool``. The instance doubles as the rollout's record of its crops, which
the SCCM rewards read through the ``environments`` keyword TRL passes to reward functions.

The tool's description (its JSON schema, built from the docstring) names one coordinate
convention, the one its ``rules`` read: Qwen3-VL boxes are normalized to 0..1000,
Qwen2.5-VL boxes are absolute pixels. A model shown both would guess.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from PIL import Image

from hf_faithful.mcot.images import load_image
from hf_faithful.mcot.messages import TOOL_NAME
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


def _as_tool(func: Callable) -> Callable:
    """Name ``func`` after the tool and publish ``bbox_2d`` as required, as DeepEyes' schema
    does. The Python default stays None so that a call without a box still reaches the tool,
    which counts it and answers with an error that names the argument."""
    signature = inspect.signature(func)
    params = [
        p.replace(default=inspect.Parameter.empty, annotation=list[float])
        if p.name == "bbox_2d"
        else p
        for p in signature.parameters.values()
    ]
    func.__signature__ = signature.replace(parameters=params)
    func.__annotations__ = {**func.__annotations__, "bbox_2d": list[float]}
    func.__name__ = func.__qualname__ = TOOL_NAME
    return func


@_as_tool
def _zoom_in_absolute(self, bbox_2d: list[float] | None = None, label: str | None = None) -> list:
    """
    Zoom in on a region of the image to see its details.

    Args:
        bbox_2d: The region as [x1, y1, x2, y2]: its top-left and bottom-right corners in absolute pixel coordinates of the image (x from 0 to the image width, y from 0 to the image height).
        label: The name of the object or detail in the region (optional).

    Returns:
        The cropped region of the original image.
    """
    return self._zoom(bbox_2d)


@_as_tool
def _zoom_in_normalized(self, bbox_2d: list[float] | None = None, label: str | None = None) -> list:
    """
    Zoom in on a region of the image to see its details.

    Args:
        bbox_2d: The region as [x1, y1, x2, y2]: its top-left and bottom-right corners in coordinates normalized to 0-1000 ([0, 0] is the top-left corner of the image, [1000, 1000] its bottom-right corner).
        label: The name of the object or detail in the region (optional).

    Returns:
        The cropped region of the original image.
    """
    return self._zoom(bbox_2d)


_TOOLS = {"absolute": _zoom_in_absolute, "normalized_1000": _zoom_in_normalized}


class _ZoomInTool:
    """``image_zoom_in_tool`` as each instance's rules describe it.

    TRL finds tools as functions on the class (``inspect.isfunction``), then takes each
    from the instance and builds its schema from the docstring: the class sees a plain
    function, an instance gets the tool documented for its ``rules.coords``.
    """

    def __get__(self, env: ZoomInEnvironment | None, owner: type | None = None) -> Callable:
        if env is None:
            return _zoom_in_absolute
        return _TOOLS[env.rules.coords].__get__(env, owner)


class ZoomInEnvironment:
    """One rollout's zoom-in tool and the record of what it cropped.

    Args:
        rules: how boxes are read (absolute or 0..1000 coordinates) and which are refused;
            the tool's description states the same convention. ``None``: absolute pixels,
            and ``SCCMRewardTrainer`` replaces them with the trained model's rules.
        image_column: row field with the full image (falls back to the first of ``"images"``).
        question_column: row field with the question (kept for the sufficiency query).
        answer_column: row field with the reference answer (``None`` when absent).

    After a rollout: ``boxes`` and ``crops`` hold the valid zoom-ins in order, ``calls`` and
    ``failed_calls`` count the tool calls that reached the tool, ``errors`` their messages.
    A refused box never crashes training: the tool raises, TRL catches the error, sends it
    back to the model as the tool response and counts it in ``tools/failure_frequency``.
    A crop whose tool response TRL drops (it would overflow ``max_completion_length``) was
    never seen by the model: :func:`forget_unseen_crops` takes it out of the record (and
    counts it in ``unseen_crops``) before anything is rewarded for it.
    """

    image_zoom_in_tool = _ZoomInTool()

    def __init__(
        self,
        rules: BoxRules | None = None,
        image_column: str = "image",
        question_column: str = "question",
        answer_column: str = "answer",
    ):
        self._rules = rules or BoxRules()
        self._default_rules = rules is None
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
        self.unseen_crops = 0
        self.errors: list[str] = []
        # Filled in by the sufficiency reward, read by the minimality reward.
        self.sufficient: bool | None = None
        self.sufficiency_answer: str | None = None
        self.scored = False

    @property
    def rules(self) -> BoxRules:
        """How boxes are read and refused (the tool's description follows ``rules.coords``)."""
        return self._rules

    @rules.setter
    def rules(self, value: BoxRules) -> None:
        if not isinstance(value, BoxRules):
            raise TypeError(f"rules must be a BoxRules, got {type(value).__name__}")
        self._rules = value
        self._default_rules = False

    @property
    def has_default_rules(self) -> bool:
        """True when nobody chose the rules (a trainer may then set the model's own)."""
        return self._default_rules

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
        self.unseen_crops = 0
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

    def _zoom(self, bbox_2d: Any) -> list:
        """Crop and record one valid box; count and re-raise a refused one."""
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


def _shown_images(completion: Any) -> set[int] | None:
    """Ids of the images in the zoom-in tool responses of ``completion``; None when it is
    not a list of chat messages (nothing to check against)."""
    if not isinstance(completion, list):
        return None
    shown = set()
    for message in completion:
        if not isinstance(message, dict) or message.get("role") != "tool":
            continue
        if message.get("name") not in (None, TOOL_NAME):
            continue
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image":
                shown.add(id(part.get("image")))
    return shown


def forget_unseen_crops(env: ZoomInEnvironment, completion: Any) -> None:
    """Keep in ``env`` only the crops whose tool response is in ``completion``.

    TRL runs the tool, then drops its response when it would push the completion past
    ``max_completion_length``: that crop was recorded but the model never saw it, so it
    earns no reward. Crops are matched by identity with the images in the completion's
    tool messages. Idempotent; a completion that is not a message list changes nothing.
    """
    shown = _shown_images(completion)
    if shown is None:
        return
    kept = [(box, crop) for box, crop in zip(env.boxes, env.crops) if id(crop) in shown]
    env.unseen_crops += len(env.crops) - len(kept)
    env.boxes = [box for box, _ in kept]
    env.crops = [crop for _, crop in kept]

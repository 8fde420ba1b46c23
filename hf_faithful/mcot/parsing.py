"""Reading multimodal chains of thought: DeepEyes text, TRL messages and JSON records
become :class:`~hf_faithful.mcot.trace.Trace` objects (files of records: :mod:`.records`).

A parser never raises on a malformed trace: it returns a Trace whose ``errors`` say what
is wrong (missing answer, too many tool calls, unreadable image), so a file with bad lines
is reported line by line. A tool call the tool refuses (broken JSON, a box outside the
image) is no error of the trace: DeepEyes answers it with ``Error: ...`` and lets the
model go on, so such a trace stays valid and the refusal is kept on its step
(:attr:`~hf_faithful.mcot.trace.Trace.refused_calls`). Crops not supplied with a trace are recomputed from
the original image with :func:`~hf_faithful.mcot.zoom.zoom_in`, exactly as the tool
would have returned them.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from PIL import Image

from hf_faithful.mcot.images import DEFAULT_MAX_IMAGE_PIXELS, load_image
from hf_faithful.mcot.messages import TOOL_NAME, content_text, parse_tool_call
from hf_faithful.mcot.trace import Step, Trace
from hf_faithful.mcot.zoom import BoxRules, InvalidBoxError, normalize_box, zoom_in

__all__ = [
    "TRACE_KEYS",
    "is_trace_record",
    "parse_deepeyes",
    "parse_messages",
    "trace_from_record",
]

_TAG_RE = re.compile(r"<(think|tool_call|tool_response|answer)>(.*?)</\1>", re.DOTALL)
_OPEN_TAG_RE = re.compile(r"</?(think|tool_call|tool_response|answer)>")
# Chat-template markup and image placeholders that may surround a raw completion.
_MARKUP_RE = re.compile(
    r"<\|im_start\|>(system|user|assistant|tool)?|<\|im_end\|>|<\|endoftext\|>"
    r"|<\|vision_start\|>(<\|image_pad\|>)*<\|vision_end\|>|<\|image_pad\|>|<image>"
)
_REFERENCE_KEYS = ("reference", "ground_truth", "gt_answer", "solution")
_QUESTION_KEYS = ("question", "problem", "query", "prompt")
_RESPONSE_KEYS = ("response", "completion", "output", "trace")
# A record holding one of these keys is a trace; without any, a question to generate from.
TRACE_KEYS = ("steps", "messages", *_RESPONSE_KEYS)


# ---------------------------------------------------------------- DeepEyes text
def _segments_from_text(text: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """Split DeepEyes text into ("text" | "tool_call" | "answer", payload) segments."""
    segments: list[tuple[str, Any]] = []
    errors: list[str] = []

    def free_text(chunk: str) -> None:
        leftover = _OPEN_TAG_RE.search(chunk)
        if leftover:
            errors.append(f"unclosed or stray tag {leftover.group(0)!r}")
            chunk = _OPEN_TAG_RE.sub("", chunk)
        chunk = _MARKUP_RE.sub("", chunk).strip()
        if chunk:
            segments.append(("text", chunk))

    position = 0
    for found in _TAG_RE.finditer(text):
        free_text(text[position : found.start()])
        position = found.end()
        tag, body = found.group(1), found.group(2)
        if tag == "think":
            body = _MARKUP_RE.sub("", body).strip()
            if body:
                segments.append(("text", body))
        elif tag in ("tool_call", "answer"):
            segments.append((tag, body.strip()))
    free_text(text[position:])
    return segments, errors


def _build_trace(
    segments: Sequence[tuple[str, Any]],
    *,
    image: Image.Image | None,
    question: str,
    crops: Sequence[Image.Image] | None,
    rules: BoxRules | None,
    max_tool_calls: int | None,
    errors: list[str],
    **fields: Any,
) -> Trace:
    steps: list[Step] = []
    answer: str | None = None
    supplied = list(crops or [])
    n_calls = n_answers = 0
    for kind, payload in segments:
        if kind == "text":
            steps.append(Step("text", text=payload))
            continue
        if kind == "answer":
            n_answers += 1
            if answer is None:  # DeepEyes' rollouts stop at the first </answer>
                answer = payload
            continue
        n_calls += 1
        step = Step("zoom")
        try:
            bbox, step.label = parse_tool_call(payload)
            step.bbox = (
                list(bbox) if isinstance(bbox, Sequence) and not isinstance(bbox, str) else bbox
            )
            if image is not None:
                step.box = normalize_box(bbox, image.size, rules)
            elif not supplied:
                raise ValueError("no image to crop from")
        except (InvalidBoxError, ValueError) as err:
            step.error = str(err)  # a refused call: the model saw the error and went on
        if step.error is None:
            step.crop = supplied.pop(0) if supplied else zoom_in(image, bbox, rules)
        steps.append(step)
    if n_answers > 1:
        where = fields.get("source") or fields.get("id") or "trace"
        warnings.warn(
            f"{where}: {n_answers} <answer> tags; the first is the answer (as in DeepEyes)",
            stacklevel=3,
        )
    if max_tool_calls is not None and n_calls > max_tool_calls:
        errors.append(f"{n_calls} tool calls, more than max_tool_calls={max_tool_calls}")
    if answer is None:
        errors.append("missing final answer (<answer>...</answer>)")
    elif not answer:
        errors.append("empty final answer")
    if image is None:
        errors.append("missing image")
    return Trace(
        question=question, image=image, steps=steps, answer=answer, errors=errors, **fields
    )


def parse_deepeyes(
    text: str,
    image: Image.Image | None,
    question: str = "",
    *,
    crops: Sequence[Image.Image] | None = None,
    rules: BoxRules | None = None,
    max_tool_calls: int | None = None,
    **fields: Any,
) -> Trace:
    """Parse a DeepEyes completion (``<think>``, ``<tool_call>``, ``<tool_response>``,
    ``<answer>``; chat markup around it is ignored).

    ``crops`` are the images the tool returned, in order; without them each valid call
    is re-cropped from ``image``. ``fields`` (``reference``, ``id``, ``source``,
    ``metadata``) are set on the trace.
    """
    segments, errors = _segments_from_text(text)
    return _build_trace(
        segments,
        image=image,
        question=question,
        crops=crops,
        rules=rules,
        max_tool_calls=max_tool_calls,
        errors=errors,
        **fields,
    )


# ---------------------------------------------------------------- chat messages
def _content_parts(content: Any) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


def _part_image(part: Any) -> Any:
    if not isinstance(part, Mapping):
        return None
    if part.get("type") == "image_url":
        url = part.get("image_url")
        return url.get("url") if isinstance(url, Mapping) else url
    for key in ("image", "url", "path"):
        if part.get(key) is not None:
            return part[key]
    return None


def parse_messages(
    messages: Sequence[Mapping[str, Any]],
    image: Image.Image | None = None,
    question: str | None = None,
    *,
    rules: BoxRules | None = None,
    max_tool_calls: int | None = None,
    base_dir: str | os.PathLike | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    **fields: Any,
) -> Trace:
    """Parse a conversation: TRL tool calls (assistant ``tool_calls`` + ``tool`` messages
    holding the crops) or DeepEyes text turns (crops in later ``user`` turns).

    The first user message gives the image and the question unless they are passed; an
    image over ``max_image_pixels`` is an error of the trace (see :func:`load_image`).
    """
    segments: list[tuple[str, Any]] = []
    errors: list[str] = []
    crops: list[Image.Image] = []
    seen_user = False
    for index, message in enumerate(messages):
        role = message.get("role")
        parts = _content_parts(message.get("content"))
        texts = content_text(parts)
        images = [x for x in (_part_image(p) for p in parts) if x is not None]
        if role == "system":
            continue
        if role == "user" and not seen_user:
            seen_user = True
            if question is None:
                question = _MARKUP_RE.sub("", texts).strip()
            if image is None and images:
                try:
                    image = load_image(images[0], base_dir, max_image_pixels=max_image_pixels)
                except (ValueError, OSError) as err:
                    errors.append(f"message {index}: cannot read image: {err}")
            continue
        if role == "assistant":
            found, errs = _segments_from_text(texts)
            segments.extend(found)
            errors.extend(f"message {index}: {e}" for e in errs)
            for call in message.get("tool_calls") or []:
                segments.append(("tool_call", call))
            continue
        if role in ("tool", "user"):
            for value in images:
                try:
                    crops.append(load_image(value, base_dir, max_image_pixels=max_image_pixels))
                except (ValueError, OSError) as err:
                    errors.append(f"message {index}: cannot read crop: {err}")
            continue
        errors.append(f"message {index}: unknown role {role!r}")
    return _build_trace(
        segments,
        image=image,
        question=question or "",
        crops=crops or None,
        rules=rules,
        max_tool_calls=max_tool_calls,
        errors=errors,
        **fields,
    )


# ---------------------------------------------------------------- JSON records
def _first(record: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        if record.get(key) is not None:
            return record[key]
    return None


def is_trace_record(record: Any) -> bool:
    """Whether a JSON record holds a trace (one of ``TRACE_KEYS``) rather than a question
    to generate a trace from; anything but an object counts as a (bad) trace."""
    return not isinstance(record, Mapping) or any(k in record for k in TRACE_KEYS)


def _steps_segments(steps: list, errors: list[str]) -> list[tuple[str, Any]]:
    segments = []
    for i, step in enumerate(steps):
        kind = step.get("type") if isinstance(step, Mapping) else None
        if kind == "text":
            segments.append(("text", str(step.get("text", ""))))
        elif kind == "zoom":
            args = {k: step[k] for k in ("bbox_2d", "label") if k in step}
            segments.append(("tool_call", {"name": TOOL_NAME, "arguments": args}))
        else:
            errors.append(f"steps[{i}]: type must be 'text' or 'zoom', got {kind!r}")
    return segments


def trace_from_record(
    record: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike | None = None,
    rules: BoxRules | None = None,
    max_tool_calls: int | None = None,
    source: str | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> Trace:
    """Read one JSON record holding a trace; never raises on bad content (see ``errors``),
    an image or crop over ``max_image_pixels`` pixels included.

    Keys: ``id``; ``question`` (or ``problem``/``query``/``prompt``); ``image`` (path
    relative to ``base_dir``, data URI, or ``datasets`` image dict; ``images`` takes the
    first); ``reference`` (or ``ground_truth``/``gt_answer``/``solution``); and the trace
    as one of ``steps`` (this package's format, with ``answer`` the model's answer),
    ``messages`` (conversation) or ``response``/``completion``/``output``/``trace``
    (DeepEyes text, optional ``crops``). With ``messages`` or a text response, a plain
    ``answer`` key is the reference, as in DeepEyes datasets. An optional ``judge_label``
    (true/false: is the answer right?) goes to ``metadata`` for judge validation.
    """
    if not isinstance(record, Mapping):
        return Trace(
            "",
            None,
            errors=[f"record must be a JSON object, got {type(record).__name__}"],
            source=source,
        )
    fields: dict[str, Any] = {
        "id": None if record.get("id") is None else str(record["id"]),
        "source": source,
    }
    errors: list[str] = []
    question = _first(record, _QUESTION_KEYS)
    image = None
    image_value = record.get("image")
    if image_value is None and record.get("images"):
        image_value = record["images"][0]
    if image_value is not None:
        try:
            image = load_image(image_value, base_dir, max_image_pixels=max_image_pixels)
        except (ValueError, OSError) as err:
            errors.append(f"image: {err}")
    reference = _first(record, _REFERENCE_KEYS)
    has_steps = "steps" in record
    if reference is None and not has_steps and record.get("answer") is not None:
        reference = record["answer"]
    fields["reference"] = None if reference is None else str(reference)
    common = {"image": image, "rules": rules, "max_tool_calls": max_tool_calls}
    question = str(question or "")
    if has_steps:
        if not isinstance(record["steps"], list):
            return Trace(question, image, errors=[*errors, "'steps' must be a list"], **fields)
        segments = _steps_segments(record["steps"], errors)
        if record.get("answer") is not None:
            segments.append(("answer", str(record["answer"])))
        trace = _build_trace(
            segments, question=question, crops=None, errors=errors, **common, **fields
        )
    elif "messages" in record:
        if not isinstance(record["messages"], list):
            return Trace(question, image, errors=[*errors, "'messages' must be a list"], **fields)
        trace = parse_messages(
            record["messages"],
            question=question if _first(record, _QUESTION_KEYS) is not None else None,
            base_dir=base_dir,
            max_image_pixels=max_image_pixels,
            **common,
            **fields,
        )
        trace.errors[:0] = errors
    elif _first(record, _RESPONSE_KEYS) is not None:
        crops = []
        for value in record.get("crops") or []:
            try:
                crops.append(load_image(value, base_dir, max_image_pixels=max_image_pixels))
            except (ValueError, OSError) as err:
                errors.append(f"crop: {err}")
        trace = parse_deepeyes(
            str(_first(record, _RESPONSE_KEYS)),
            question=question,
            crops=crops or None,
            **common,
            **fields,
        )
        trace.errors[:0] = errors
    else:
        keys = list(TRACE_KEYS)
        return Trace(
            question, image, errors=[*errors, f"no trace: record needs one of {keys}"], **fields
        )
    if not trace.question:
        trace.errors.append("missing question")
    if record.get("judge_label") is not None:
        try:
            trace.metadata["judge_label"] = _label(record["judge_label"])
        except ValueError as err:
            trace.errors.append(str(err))
    return trace


_LABELS = {"true": True, "yes": True, "correct": True, "1": True}
_LABELS |= {"false": False, "no": False, "incorrect": False, "wrong": False, "0": False}


def _label(value: Any) -> bool:
    """A human label of whether the answer is right (judge validation), read leniently."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _LABELS:
        return _LABELS[value.strip().lower()]
    raise ValueError(f"judge_label must be true/false (yes/no, 1/0), got {value!r}")

"""The chat side of the thinking-with-images protocol (DeepEyes' format).

A chat message's ``content`` is a string or a list of parts ``{"type": "text", "text":
...}`` / ``{"type": "image", "image": PIL.Image}``. Tool calls are written in the
assistant text as ``<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d":
[...]}}</tool_call>`` and the crop comes back in a user turn wrapped in
``<tool_response>``: every Qwen-VL template and every OpenAI-compatible endpoint accepts
that (tool-role messages with images are not portable).

The measurement (``faithfulness/``) and the training rewards (``sccm/``) both read
replies and build the sufficiency query here, so they cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from hf_faithful.mcot.answers import extract_answer

__all__ = [
    "DEEPEYES_SYSTEM_PROMPT",
    "DEFAULT_TOOL_ERROR",
    "DEFAULT_TOOL_RESPONSE",
    "TOOL_NAME",
    "answer_from_reply",
    "check_tool_templates",
    "content_text",
    "final_answer",
    "message_text",
    "parse_tool_call",
    "sufficiency_query",
    "tool_call_text",
    "tool_response_content",
]

TOOL_NAME = "image_zoom_in_tool"
# The system turn of DeepEyes-style training rows (``load_deepeyes``, ZoomVQA's prompt column).
DEEPEYES_SYSTEM_PROMPT = (
    "You are a helpful assistant that answers questions about an image. Think step by step inside "
    "<think></think>. When a detail is too small to see, call image_zoom_in_tool with the box of the "
    "region to look at it closely; you may zoom in several times. Give the final answer inside "
    "<answer></answer>."
)

# How the tool answers a call: ``{image}`` marks where the crop goes, ``{error}`` the
# reason a call was refused. Configurable because models are trained on one wording
# (DeepEyes repeats its user instruction inside every tool response).
DEFAULT_TOOL_RESPONSE = "<tool_response>{image}</tool_response>"
DEFAULT_TOOL_ERROR = "<tool_response>Error: {error}</tool_response>"

Message = dict[str, Any]


def content_text(content: Any) -> str:
    """The text of a message ``content``: the string itself, or its text parts joined
    (image parts contribute nothing)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return "".join(texts)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message (see :func:`content_text`)."""
    return content_text(message.get("content"))


def tool_call_text(bbox: Any, label: str | None = None) -> str:
    """A zoom-in call as the model writes it: ``<tool_call>{json}</tool_call>``."""
    arguments: dict[str, Any] = {"bbox_2d": bbox}
    if label is not None:
        arguments["label"] = label
    return f"<tool_call>{json.dumps({'name': TOOL_NAME, 'arguments': arguments})}</tool_call>"


def parse_tool_call(payload: Any) -> tuple[Any, str | None]:
    """``(bbox_2d, label)`` of a zoom-in call given as JSON text, a ``{"name", "arguments"}``
    dict or an OpenAI/TRL ``{"function": {...}}`` dict; raises ValueError naming the problem.
    The box itself is not validated (see :func:`~hf_faithful.mcot.zoom.normalize_box`)."""
    if isinstance(payload, str):
        try:
            payload = json.loads(payload.strip())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"tool call is not valid JSON ({err.msg}): {payload.strip()[:80]!r}"
            ) from None
    if not isinstance(payload, Mapping):
        raise ValueError(f"tool call must be a JSON object, got {type(payload).__name__}")
    if "function" in payload:  # OpenAI / TRL {"type": "function", "function": {...}}
        payload = payload["function"]
    name = payload.get("name")
    if name != TOOL_NAME:
        raise ValueError(f"unknown tool {name!r} (expected {TOOL_NAME!r})")
    arguments = payload.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as err:
            raise ValueError(f"tool call arguments are not valid JSON ({err.msg})") from None
    if not isinstance(arguments, Mapping) or "bbox_2d" not in arguments:
        raise ValueError("tool call arguments have no 'bbox_2d'")
    label = arguments.get("label")
    return arguments["bbox_2d"], None if label is None else str(label)


def check_tool_templates(response: str, error: str) -> None:
    """Raise ValueError unless ``response`` holds ``{image}`` exactly once and ``error``
    holds ``{error}`` (else the crop or the reason would silently vanish)."""
    if response.count("{image}") != 1:
        raise ValueError(f"tool_response must contain '{{image}}' once, got {response!r}")
    if "{error}" not in error:
        raise ValueError(f"tool_error must contain '{{error}}', got {error!r}")


def tool_response_content(
    response: Image.Image | str | None,
    template: str = DEFAULT_TOOL_RESPONSE,
    error_template: str = DEFAULT_TOOL_ERROR,
) -> list[dict[str, Any]]:
    """Content of the user turn answering a zoom-in call: ``template`` with the crop in
    place of ``{image}``, or ``error_template`` with the tool's message in place of
    ``{error}`` when it refused the box (plain replacement: other braces stay)."""
    check_tool_templates(template, error_template)
    if isinstance(response, Image.Image):
        before, after = template.split("{image}")
        parts: list[dict[str, Any]] = []
        if before:
            parts.append({"type": "text", "text": before})
        parts.append({"type": "image", "image": response})
        if after:
            parts.append({"type": "text", "text": after})
        return parts
    return [{"type": "text", "text": error_template.replace("{error}", response or "no crop")}]


def sufficiency_query(crops: Sequence[Image.Image], question: str, prompt: str) -> list[Message]:
    """The sufficiency query: ``question`` re-asked with only ``crops`` (no full image, no
    reasoning), one user turn with the crops, then ``prompt.format(question=question)``.

    The judge's sufficiency metric and SCCM's sufficiency reward both ask it.
    """
    content: list[dict[str, Any]] = [{"type": "image", "image": crop} for crop in crops]
    content.append({"type": "text", "text": prompt.format(question=question)})
    return [{"role": "user", "content": content}]


def answer_from_reply(reply: str | None, *, prefilled: bool = False) -> str | None:
    """The answer in a model's reply: the ``<answer>`` content (see
    :func:`~hf_faithful.mcot.answers.extract_answer`), the continuation of a prefilled
    ``<answer>`` when ``prefilled``, else the reply's first non-empty line; None when the
    reply holds no text.

    A prefilled reply is a continuation unless it opens its own ``<answer>`` before any
    ``</answer>`` (some servers restart the turn), so in ``"B</answer><answer>C</answer>"``
    the answer is B, the first one."""
    if reply is None:
        return None
    lowered = reply.lower()
    opened, closed = lowered.find("<answer>"), lowered.find("</answer>")
    if prefilled and (opened < 0 or 0 <= closed < opened):
        reply = "<answer>" + reply
    answer = extract_answer(reply)
    if answer is not None:
        return answer
    lines = [line.strip() for line in reply.splitlines() if line.strip()]
    return lines[0] if lines else None


def final_answer(completion: Sequence[Mapping[str, Any]] | str) -> str | None:
    """A rollout's own final answer: :func:`answer_from_reply` of its last assistant turn
    (a TRL conversational completion) or of the text; None when it ended without text."""
    if isinstance(completion, str):
        return answer_from_reply(completion)
    turns = [m for m in completion if m.get("role") == "assistant"]
    return answer_from_reply(message_text(turns[-1])) if turns else None

"""What a multimodal chain of thought (MCoT) is: a question, the full image, ordered steps
(reasoning text, zoom-in calls with the crop they returned) and a final answer.

This module is the data model only. Reading traces (DeepEyes text, TRL messages, JSON /
JSONL files) lives in :mod:`hf_faithful.mcot.parsing`, the chat format they render to in
:mod:`hf_faithful.mcot.messages`, images in :mod:`hf_faithful.mcot.images`.
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from hf_faithful.mcot.images import png_data_uri
from hf_faithful.mcot.messages import (
    DEFAULT_TOOL_ERROR,
    DEFAULT_TOOL_RESPONSE,
    tool_call_text,
    tool_response_content,
)
from hf_faithful.mcot.zoom import Box

__all__ = ["Step", "Trace"]


@dataclass
class Step:
    """One step of a trace: reasoning ``text``, or a ``zoom`` call and the crop it returned.

    For a zoom step, ``bbox`` is the box as the model emitted it (in the model's own
    coordinates), ``box`` the validated box in absolute pixels of the full image, and
    ``error`` the reason the tool refused the call (then ``crop`` is None).
    """

    kind: Literal["text", "zoom"]
    text: str = ""
    bbox: list[float] | None = None
    box: Box | None = None
    crop: Image.Image | None = None
    label: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "text":
            return {"type": "text", "text": self.text}
        out: dict[str, Any] = {"type": "zoom", "bbox_2d": self.bbox}
        if self.label is not None:
            out["label"] = self.label
        return out


@dataclass
class Trace:
    """A multimodal chain of thought; ``errors`` non-empty means the trace is invalid."""

    question: str
    image: Image.Image | None
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    reference: str | None = None
    id: str | None = None
    source: str | None = None
    errors: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def zoom_steps(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "zoom"]

    @property
    def crops(self) -> list[Image.Image]:
        return [s.crop for s in self.steps if s.kind == "zoom" and s.crop is not None]

    @property
    def boxes(self) -> list[Box]:
        return [s.box for s in self.steps if s.kind == "zoom" and s.box is not None]

    @property
    def refused_calls(self) -> list[str]:
        """``"tool call N: reason"`` for each call the tool refused. The trace stays valid:
        the model saw the error and went on, as DeepEyes allows."""
        return [
            f"tool call {i}: {s.error}"
            for i, s in enumerate(self.zoom_steps, start=1)
            if s.error is not None
        ]

    @property
    def reasoning(self) -> str:
        """All reasoning text, in order (what a textual intervention corrupts)."""
        return "\n".join(s.text for s in self.steps if s.kind == "text")

    def copy(self) -> Trace:
        """A copy whose steps can be changed without touching this trace (images shared)."""
        new = copy.copy(self)
        new.steps = [copy.copy(s) for s in self.steps]
        new.errors = list(self.errors)
        new.metadata = dict(self.metadata)
        return new

    def to_messages(
        self,
        *,
        system_prompt: str | None = None,
        user_template: str = "{question}",
        include_answer: bool = True,
        prefill_answer: bool = False,
        tool_response: str = DEFAULT_TOOL_RESPONSE,
        tool_error: str = DEFAULT_TOOL_ERROR,
        until_last_crop: bool = False,
    ) -> list[dict[str, Any]]:
        """Render as chat messages (content lists with PIL images) for a processor's template,
        in DeepEyes' format (see :mod:`hf_faithful.mcot.messages`).

        With ``include_answer=False`` the last assistant turn holds the
        reasoning after the last crop, so the answer can be regenerated from that prefix;
        ``prefill_answer`` also opens ``<answer>`` so the model writes the answer at once.
        ``tool_response`` / ``tool_error`` word the tool's turns (see
        :func:`~hf_faithful.mcot.messages.tool_response_content`). ``until_last_crop``
        stops after the tool's response holding the last crop (the reasoning after it and
        the answer left out), so the model regenerates everything that crop led to; a
        trace without crops renders as usual.
        """
        messages: list[dict[str, Any]] = []
        if system_prompt:
            messages.append(
                {"role": "system", "content": [{"type": "text", "text": system_prompt}]}
            )
        user: list[dict[str, Any]] = []
        if self.image is not None:
            user.append({"type": "image", "image": self.image})
        user.append({"type": "text", "text": user_template.format(question=self.question)})
        messages.append({"role": "user", "content": user})
        pending = ""
        steps = self.steps
        crops = [i for i, s in enumerate(steps) if s.kind == "zoom" and s.crop is not None]
        cut = until_last_crop and bool(crops)
        if cut:
            steps = steps[: crops[-1] + 1]
        for step in steps:
            if step.kind == "text":
                pending += f"<think>{step.text}</think>\n"
                continue
            pending += tool_call_text(step.bbox, step.label)
            messages.append({"role": "assistant", "content": [{"type": "text", "text": pending}]})
            pending = ""
            response = step.crop if step.crop is not None else step.error
            content = tool_response_content(response, tool_response, tool_error)
            messages.append({"role": "user", "content": content})
        if cut:
            return messages
        if include_answer and self.answer is not None:
            pending += f"<answer>{self.answer}</answer>"
        elif prefill_answer:
            pending += "<answer>"
        if pending:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": pending}]})
        return messages

    def to_dict(self, image_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        """JSON-ready record that :func:`~hf_faithful.mcot.parsing.trace_from_record` reads
        back (crops are recomputed).

        The image is written as PNG under ``image_dir`` (path relative to it) when given,
        else embedded as a data URI.
        """
        record: dict[str, Any] = {"id": self.id, "question": self.question}
        if self.image is not None:
            if image_dir is not None:
                # content-addressed: identical images are stored once, different ones never clash
                name = hashlib.sha1(self.image.tobytes()).hexdigest()[:16] + ".png"
                self.image.save(Path(image_dir) / name)
                record["image"] = name
            else:
                record["image"] = png_data_uri(self.image)
        record["steps"] = [s.to_dict() for s in self.steps]
        record["answer"] = self.answer
        if self.reference is not None:
            record["reference"] = self.reference
        if self.errors:
            record["errors"] = list(self.errors)
        return record

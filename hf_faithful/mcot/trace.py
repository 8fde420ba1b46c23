"""What a multimodal chain of thought (MCoT) is: a question, the full image, ordered steps
(reasoning text, zoom-in calls with the crop they returned) and a final answer.

Parsers read DeepEyes' text format, TRL's conversational tool-call messages and JSON /
JSONL files of either. A parser never raises on a malformed trace: it returns a
:class:`Trace` whose ``errors`` say what is wrong (broken JSON, refused box, missing
answer, too many tool calls), so a file with bad lines is reported line by line.
Crops not supplied with a trace are recomputed from the original image with
:func:`~hf_faithful.mcot.zoom.zoom_in`, exactly as the tool would have returned them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from hf_faithful.mcot.zoom import Box, BoxRules, InvalidBoxError, normalize_box, zoom_in

__all__ = [
    "TOOL_NAME",
    "Step",
    "Trace",
    "crops_only_messages",
    "load_image",
    "load_traces",
    "parse_deepeyes",
    "parse_messages",
    "parse_tool_call",
    "save_traces",
    "trace_from_record",
]

TOOL_NAME = "image_zoom_in_tool"
_TAGS = ("think", "tool_call", "tool_response", "answer")
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
    ) -> list[dict[str, Any]]:
        """Render as chat messages (content lists with PIL images) for a processor's template.

        Tool calls are written in the assistant text and crops come back in a user turn
        wrapped in ``<tool_response>``, as DeepEyes does: every Qwen-VL template and every
        OpenAI-compatible endpoint accepts that (tool-role messages with images are not
        portable). With ``include_answer=False`` the last assistant turn holds the
        reasoning after the last crop, so the answer can be regenerated from that prefix;
        ``prefill_answer`` also opens ``<answer>`` so the model writes the answer at once.
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
        for step in self.steps:
            if step.kind == "text":
                pending += f"<think>{step.text}</think>\n"
                continue
            call = {"name": TOOL_NAME, "arguments": {"bbox_2d": step.bbox}}
            if step.label is not None:
                call["arguments"]["label"] = step.label
            pending += f"<tool_call>{json.dumps(call)}</tool_call>"
            messages.append({"role": "assistant", "content": [{"type": "text", "text": pending}]})
            pending = ""
            if step.crop is not None:
                response = [
                    {"type": "text", "text": "<tool_response>"},
                    {"type": "image", "image": step.crop},
                    {"type": "text", "text": "</tool_response>"},
                ]
            else:
                text = f"<tool_response>Error: {step.error or 'no crop'}</tool_response>"
                response = [{"type": "text", "text": text}]
            messages.append({"role": "user", "content": response})
        if include_answer and self.answer is not None:
            pending += f"<answer>{self.answer}</answer>"
        elif prefill_answer:
            pending += "<answer>"
        if pending:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": pending}]})
        return messages

    def to_text(self) -> str:
        """The trace in DeepEyes' text format (``<image>`` marks each crop)."""
        parts = []
        for step in self.steps:
            if step.kind == "text":
                parts.append(f"<think>{step.text}</think>")
            else:
                call = {"name": TOOL_NAME, "arguments": {"bbox_2d": step.bbox}}
                if step.label is not None:
                    call["arguments"]["label"] = step.label
                parts.append(f"<tool_call>{json.dumps(call)}</tool_call>")
                parts.append("<tool_response><image></tool_response>")
        if self.answer is not None:
            parts.append(f"<answer>{self.answer}</answer>")
        return "\n".join(parts)

    def to_dict(self, image_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        """JSON-ready record that :func:`trace_from_record` reads back (crops are recomputed).

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
                record["image"] = _data_uri(self.image)
        record["steps"] = [s.to_dict() for s in self.steps]
        record["answer"] = self.answer
        if self.reference is not None:
            record["reference"] = self.reference
        if self.errors:
            record["errors"] = list(self.errors)
        return record


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def load_image(value: Any, base_dir: str | os.PathLike | None = None) -> Image.Image:
    """An RGB PIL image from a PIL image, a path (relative to ``base_dir``), a data URI,
    raw bytes, or a ``datasets`` image dict (``{"bytes": ..., "path": ...}``)."""
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
    elif isinstance(value, str):
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
    n_calls = 0
    for kind, payload in segments:
        if kind == "text":
            steps.append(Step("text", text=payload))
            continue
        if kind == "answer":
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
            step.error = str(err)
            errors.append(f"tool call {n_calls}: {err}")
        if step.error is None:
            step.crop = supplied.pop(0) if supplied else zoom_in(image, bbox, rules)
        steps.append(step)
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


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [p if isinstance(p, Mapping) else {"type": "text", "text": str(p)} for p in content]


def _part_image(part: Mapping[str, Any], base_dir: str | os.PathLike | None) -> Any:
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
    **fields: Any,
) -> Trace:
    """Parse a conversation: TRL tool calls (assistant ``tool_calls`` + ``tool`` messages
    holding the crops) or DeepEyes text turns (crops in later ``user`` turns).

    The first user message gives the image and the question unless they are passed.
    """
    segments: list[tuple[str, Any]] = []
    errors: list[str] = []
    crops: list[Image.Image] = []
    seen_user = False
    for index, message in enumerate(messages):
        role = message.get("role")
        parts = _content_parts(message.get("content"))
        texts = "".join(p.get("text", "") for p in parts if p.get("type") == "text")
        images = [x for x in (_part_image(p, base_dir) for p in parts) if x is not None]
        if role == "system":
            continue
        if role == "user" and not seen_user:
            seen_user = True
            if question is None:
                question = _MARKUP_RE.sub("", texts).strip()
            if image is None and images:
                try:
                    image = load_image(images[0], base_dir)
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
                    crops.append(load_image(value, base_dir))
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


def _first(record: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        if record.get(key) is not None:
            return record[key]
    return None


def trace_from_record(
    record: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike | None = None,
    rules: BoxRules | None = None,
    max_tool_calls: int | None = None,
    source: str | None = None,
) -> Trace:
    """Read one JSON record holding a trace; never raises on bad content (see ``errors``).

    Keys: ``id``; ``question`` (or ``problem``/``query``/``prompt``); ``image`` (path
    relative to ``base_dir``, data URI, or ``datasets`` image dict; ``images`` takes the
    first); ``reference`` (or ``ground_truth``/``gt_answer``/``solution``); and the trace
    as one of ``steps`` (this package's format, with ``answer`` the model's answer),
    ``messages`` (conversation) or ``response``/``completion``/``output``/``trace``
    (DeepEyes text, optional ``crops``). With ``messages`` or a text response, a plain
    ``answer`` key is the reference, as in DeepEyes datasets.
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
            image = load_image(image_value, base_dir)
        except (ValueError, OSError) as err:
            errors.append(f"image: {err}")
    reference = _first(record, _REFERENCE_KEYS)
    has_steps = "steps" in record
    if reference is None and not has_steps and record.get("answer") is not None:
        reference = record["answer"]
    fields["reference"] = None if reference is None else str(reference)
    common = {"image": image, "rules": rules, "max_tool_calls": max_tool_calls}
    if has_steps:
        if not isinstance(record["steps"], list):
            return Trace(
                str(question or ""), image, errors=[*errors, "'steps' must be a list"], **fields
            )
        segments = []
        for i, step in enumerate(record["steps"]):
            kind = step.get("type") if isinstance(step, Mapping) else None
            if kind == "text":
                segments.append(("text", str(step.get("text", ""))))
            elif kind == "zoom":
                args = {k: step[k] for k in ("bbox_2d", "label") if k in step}
                segments.append(("tool_call", {"name": TOOL_NAME, "arguments": args}))
            else:
                errors.append(f"steps[{i}]: type must be 'text' or 'zoom', got {kind!r}")
        answer = record.get("answer")
        if answer is not None:
            segments.append(("answer", str(answer)))
        trace = _build_trace(
            segments, question=str(question or ""), crops=None, errors=errors, **common, **fields
        )
    elif "messages" in record:
        if not isinstance(record["messages"], list):
            return Trace(
                str(question or ""), image, errors=[*errors, "'messages' must be a list"], **fields
            )
        trace = parse_messages(
            record["messages"],
            question=None if question is None else str(question),
            base_dir=base_dir,
            **common,
            **fields,
        )
        trace.errors[:0] = errors
    elif _first(record, _RESPONSE_KEYS) is not None:
        crops = []
        for value in record.get("crops") or []:
            try:
                crops.append(load_image(value, base_dir))
            except (ValueError, OSError) as err:
                errors.append(f"crop: {err}")
        trace = parse_deepeyes(
            str(_first(record, _RESPONSE_KEYS)),
            question=str(question or ""),
            crops=crops or None,
            **common,
            **fields,
        )
        trace.errors[:0] = errors
    else:
        keys = ["steps", "messages", *_RESPONSE_KEYS]
        return Trace(
            str(question or ""),
            image,
            errors=[*errors, f"no trace: record needs one of {keys}"],
            **fields,
        )
    if not trace.question:
        trace.errors.append("missing question")
    return trace


def load_traces(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    rules: BoxRules | None = None,
    max_tool_calls: int | None = None,
) -> list[Trace]:
    """Read traces from a ``.jsonl`` file (one record per line) or a ``.json`` list.

    Every record becomes a Trace, bad ones included (``errors`` set, ``source`` =
    ``"file:line"``), so a caller can report each bad line instead of stopping at the
    first. Image paths are relative to ``image_root`` (default: the file's folder).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"traces file not found: {path}")
    base_dir = Path(image_root) if image_root is not None else path.parent
    kwargs = {"base_dir": base_dir, "rules": rules, "max_tool_calls": max_tool_calls}
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
        if isinstance(data, Mapping) and isinstance(data.get("traces"), list):
            data = data["traces"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: a .json traces file must hold a list of records")
        return [
            trace_from_record(r, source=f"{path.name}[{i}]", **kwargs) for i, r in enumerate(data)
        ]
    traces = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{path.name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            traces.append(Trace("", None, errors=[f"invalid JSON: {err.msg}"], source=source))
            continue
        traces.append(trace_from_record(record, source=source, **kwargs))
    return traces


def save_traces(traces: Iterable[Trace], path: str | os.PathLike) -> None:
    """Write traces as JSONL with their images as PNG files next to it (atomic)."""
    path = Path(path)
    image_dir = path.parent / f"{path.stem}_images"
    image_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for i, trace in enumerate(traces):
            record = trace.to_dict(image_dir=image_dir)
            if "image" in record and not record["image"].startswith("data:"):
                record["image"] = f"{image_dir.name}/{record['image']}"
            record["id"] = record["id"] if record["id"] is not None else str(i)
            handle.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def crops_only_messages(
    question: str, crops: Sequence[Image.Image], instruction: str | None = None
) -> list[dict[str, Any]]:
    """A single user turn with only the crops and the question: no full image, no reasoning.

    This is the sufficiency query (can the crops alone answer the question?) used by the
    judge and by SCCM's sufficiency reward.
    """
    instruction = (
        "Answer the question using only these image regions. "
        "Put the final answer in <answer></answer>."
        if instruction is None
        else instruction
    )
    content: list[dict[str, Any]] = [{"type": "image", "image": crop} for crop in crops]
    content.append({"type": "text", "text": f"{question}\n{instruction}".strip()})
    return [{"role": "user", "content": content}]

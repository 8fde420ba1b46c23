"""Faithfulness inspector: does a "thinking with images" model use its crops and its reasoning?

Generate a chain of thought with the zoom-in tool for an image and a question (or load a
trace file), see every crop as a box on the image and beside its step, then intervene
(arXiv 2510.23482): replace the crops (``do(V)``) or corrupt the reasoning (``do(T)``),
let the model answer again and see whether the answer moves; a judge scores the crops.

Offline by default with the bundled reference VLM: a small Qwen3-VL trained here to zoom
on ZoomVQA (``hf_faithful.load_reference_vlm``), whose tool use is learned, not scripted;
its examples are ZoomVQA test questions. A teaching option stays beside it: the tiny
built-in Qwen3-VL (random weights) forced to a transparent rule (zoom where the question
points, answer with the colour of the last image it saw), a policy whose faithfulness is
known by construction. ``python spaces/faithfulness_inspector/app.py``.

Any other model too: a Hub id, a local folder, or the served name behind an
OpenAI-compatible endpoint (vLLM, SGLang), with its box coordinate frame, prompt preset
and whether it judges itself. ``HF_FAITHFUL_INSPECTOR_MODEL`` (``--model``) and friends
make one the page's default (see ``Defaults``).

One file of ~900 lines on purpose: a Space runs ``app.py`` as uploaded, and the protocol
it shows (messages, images, backends, the measurement) is imported from ``hf_faithful``;
what stays here is the demo policy, the views and the UI.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import html
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hf_faithful.faithfulness.cli import (
    SAMPLE_DIR,
    SAMPLE_QUESTIONS,
    SAMPLE_TRACES,
    ZOOMVQA_QUESTIONS,
)
from hf_faithful.faithfulness.config import FaithfulnessConfig
from hf_faithful.faithfulness.evaluator import FaithfulnessEvaluator
from hf_faithful.faithfulness.interventions import intervene_text, intervene_visual
from hf_faithful.faithfulness.judge import FaithfulnessJudge
from hf_faithful.faithfulness.presets import (
    PRESETS,
    REFERENCE_MODEL,
    model_fields,
    preset_config,
    suggested_settings,
)
from hf_faithful.mcot.answers import answers_match
from hf_faithful.mcot.backends import BackendError, LocalVLMBackend, build_backend
from hf_faithful.mcot.images import fit_image, png_data_uri
from hf_faithful.mcot.messages import message_text, tool_call_text
from hf_faithful.mcot.records import load_traces
from hf_faithful.mcot.trace import Trace
from hf_faithful.mcot.zoom import BoxRules
from hf_faithful.testing.tiny_vlm import script_generation

REFERENCE = "reference VLM (trained here to zoom on ZoomVQA)"
SCRIPTED = "teaching: tiny Qwen3-VL, scripted policy"
RAW = "tiny Qwen3-VL, random weights (unscripted)"
CUSTOM = "your model (Hub id, folder or served name below)"
MODELS = (REFERENCE, SCRIPTED, RAW, CUSTOM)
VISUAL = ("noise_gaussian", "noise_uniform", "blank", "other_region")
MAX_SIDE = 448  # uploads for the tiny models are downscaled: their cost grows with the pixels
REFERENCE_MAX_SIDE = 768  # ZoomVQA's canvas: the reference VLM's crops need full resolution
CUSTOM_MAX_SIDE = 1024  # a real model sees detail at full size; zooming needs it
# BoxRules' frames: (label, value)
COORDS = (
    ("pixels (Qwen2.5-VL, DeepEyes)", "absolute"),
    ("0..1000 (Qwen3-VL)", "normalized_1000"),
)
# the model as its own judge: value -> judge_metrics
JUDGES = {"both": ("reliability", "sufficiency"), "sufficiency": ("sufficiency",), "none": ()}
JUDGE_CHOICES = (
    ("reliability + sufficiency", "both"),
    ("sufficiency only", "sufficiency"),
    ("no judge", "none"),
)
NO_PRESET = "none"
PRESET_CHOICES = (NO_PRESET, *sorted(PRESETS))
# the fields of "your model", named in its errors as the page labels them
MODEL_FIELD, ENDPOINT_FIELD = "model id or folder", "endpoint URL"
COORDS_FIELD, JUDGE_FIELD, PRESET_FIELD = "box coordinate frame", "judge", "prompt preset"
DISPLAY_SIDE = 448
SEED = 0
_COLORS = (  # hue ranges (degrees) -> name, as used by the bundled samples
    (15, "red"),
    (40, "orange"),
    (70, "yellow"),
    (170, "green"),
    (260, "blue"),
    (320, "purple"),
    (345, "pink"),
    (360, "red"),
)
_PALETTE = ("#ef4444", "#3b82f6", "#22c55e", "#f59e0b", "#a855f7", "#06b6d4")


# ------------------------------------------------------------------ demo policy
def colour_name(image: Image.Image) -> str:
    """Name of the dominant saturated colour (gray-ish pixels are background); a
    mostly unsaturated image is white, gray or black."""
    hsv = np.asarray(image.convert("RGB").convert("HSV"), dtype=np.float32).reshape(-1, 3)
    hue, sat, val = hsv[:, 0] * 360 / 255, hsv[:, 1] / 255, hsv[:, 2] / 255
    vivid = (sat > 0.35) & (val > 0.25)
    if vivid.mean() < 0.03:
        level = float(val.mean())
        return "white" if level > 0.8 else "black" if level < 0.25 else "gray"
    edges = [0] + [upper for upper, _ in _COLORS]
    counts = np.histogram(hue[vivid], bins=edges)[0]
    votes: dict[str, int] = {}
    for (_, name), count in zip(_COLORS, counts):
        votes[name] = votes.get(name, 0) + int(count)
    return max(votes, key=votes.get)


def region_for(question: str, size: tuple[int, int]) -> tuple[list[int], str]:
    """The box (absolute pixels) a question points at: a corner, a side, or the centre."""
    width, height = size
    q = question.lower()
    x = 0 if "left" in q else width // 2 if "right" in q else width // 4
    y = (
        0
        if ("top" in q or "upper" in q)
        else height // 2
        if ("bottom" in q or "lower" in q)
        else height // 4
    )
    where = " ".join(w for w in ("top", "bottom", "left", "right") if w in q) or "centre"
    return [x, y, x + width // 2, y + height // 2], where


def _images(message: dict[str, Any]) -> list[Image.Image]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [p["image"] for p in content if p.get("type") == "image" and "image" in p]


def demo_reply(prompt: Sequence[dict[str, Any]]) -> str:
    """What the scripted policy says to a chat prompt (trace turn, regeneration, judge)."""
    texts = "\n".join(message_text(m) for m in prompt)
    images = [image for m in prompt for image in _images(m)]
    if "reliable evidence" in texts:  # the shipped reliability-judge prompt
        said = re.search(r"Model's answer:\s*(.*)", texts)
        crops = images[1:]
        agree = (
            bool(crops)
            and said is not None
            and colour_name(crops[-1]) == said.group(1).strip().lower()
        )
        return "Score: 9" if agree else "Score: 1"
    if "Using only what you can" in texts:  # the shipped sufficiency-judge prompt
        return f"<answer>{colour_name(images[-1]) if images else 'unknown'}</answer>"
    users = [m for m in prompt if m.get("role") == "user"]
    question = message_text(users[0]) if users else ""
    crops = [image for m in users[1:] for image in _images(m)]
    continuing = prompt[-1].get("role") == "assistant"
    if crops:
        colour = colour_name(crops[-1])
        if continuing and message_text(prompt[-1]).rstrip().endswith("<answer>"):
            return f"{colour}</answer>"
        return f"<think>The zoomed region shows {colour}.</think>\n<answer>{colour}</answer>"
    if not users or not _images(users[0]):
        return "<answer>unknown</answer>"
    if continuing:  # a prefix without crops: answer from the full image
        return f"{colour_name(_images(users[0])[0])}</answer>"
    box, where = region_for(question, _images(users[0])[0].size)
    return (
        f"<think>The question points at the {where} of the image; I zoom in there.</think>\n"
        + tool_call_text(box, where)
    )


class ScriptedTinyVLM:
    """The tiny Qwen3-VL with its ``generate`` forced to :func:`demo_reply` (an
    ``AnswerBackend``): real processor, chat template and decoding; a known policy."""

    def __init__(self) -> None:
        self.backend = build_backend("tiny", batch_size=1)
        self._replies: list[str] = []
        script_generation(
            self.backend.model,
            self.backend.processor.tokenizer,
            lambda prompt, row: self._replies[row],
        )

    def answer(self, prompts, max_new_tokens: int = 128, stop=None) -> list[str]:
        out = []
        for prompt in prompts:  # one prompt per generate call: the script is per prompt
            self._replies = [demo_reply(prompt)]
            out += self.backend.answer([prompt], max_new_tokens, stop)
        return out


# ------------------------------------------------------------ models under test
ENV_MODEL = "HF_FAITHFUL_INSPECTOR_MODEL"
ENV_ENDPOINT = "HF_FAITHFUL_INSPECTOR_ENDPOINT"
ENV_API_KEY = "HF_FAITHFUL_INSPECTOR_API_KEY"  # else $OPENAI_API_KEY; default endpoint only
ENV_COORDS = "HF_FAITHFUL_INSPECTOR_COORDS"
ENV_JUDGE = "HF_FAITHFUL_INSPECTOR_JUDGE"
ENV_PRESET = "HF_FAITHFUL_INSPECTOR_PRESET"
ENV_CONTINUE = "HF_FAITHFUL_INSPECTOR_CONTINUE_FINAL_MESSAGE"


@dataclass(frozen=True)
class Defaults:
    """What the page opens with: "your model" when ``model`` is set (from the
    ``HF_FAITHFUL_INSPECTOR_*`` environment variables or ``app.py``'s flags), else the
    reference VLM. ``coords``, ``judge`` and ``preset`` left None are what the model's
    name suggests (:func:`~hf_faithful.faithfulness.presets.suggested_settings`)."""

    model: str = ""
    endpoint: str = ""
    coords: str | None = None
    judge: str | None = None
    preset: str | None = None
    continue_final_message: bool = False

    def __post_init__(self) -> None:
        for name, value, allowed, env in (
            ("coords", self.coords, [v for _, v in COORDS], ENV_COORDS),
            ("judge", self.judge, list(JUDGES), ENV_JUDGE),
            ("preset", self.preset, list(PRESET_CHOICES), ENV_PRESET),
        ):
            if value is not None and value not in allowed:
                raise ValueError(f"{name} (${env}) must be one of {allowed}, got {value!r}")
        if self.endpoint and not self.model:
            raise ValueError(f"an endpoint (${ENV_ENDPOINT}) needs its served model (${ENV_MODEL})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Defaults:
        env = os.environ if environ is None else environ
        flag = env.get(ENV_CONTINUE, "").strip().lower()
        return cls(
            model=env.get(ENV_MODEL, "").strip(),
            endpoint=env.get(ENV_ENDPOINT, "").strip(),
            coords=env.get(ENV_COORDS) or None,
            judge=env.get(ENV_JUDGE) or None,
            preset=env.get(ENV_PRESET) or None,
            continue_final_message=flag in ("1", "true", "yes"),
        )

    def settings(self) -> dict[str, Any]:
        """The page's initial values of the model fields (suggested where not set)."""
        suggested = _suggested(self.model, self.endpoint)
        return {
            "model": CUSTOM if self.model else REFERENCE,
            "coords": self.coords or suggested["coords"],
            "judge": self.judge or suggested["judge"],
            "preset": self.preset or suggested["preset"],
        }


_defaults = Defaults()  # set by build_demo: the owner's endpoint gets the owner's API key
_backends: dict[tuple, Any] = {}
_lock = threading.RLock()  # one model call at a time; loads happen under it (never twice)
MAX_CUSTOM_LOCAL = 1  # local models of users kept loaded at once (memory): older ones go


def _suggested(model: str, endpoint: str = "") -> dict[str, str]:
    """Field values the model's name suggests (the DeepEyes preset for a DeepEyes id, ...)."""
    settings = suggested_settings(model or None, endpoint or None)
    metrics = tuple(settings["judge_metrics"])
    judge = next((k for k, v in JUDGES.items() if v == metrics), "both")
    return {"coords": settings["coords"], "judge": judge, "preset": settings["preset"] or NO_PRESET}


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _local_model(model: str) -> str:
    """A typed local folder (resolved) or Hub id; a path that is none of them is an error
    naming the field."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise gr.Error(f"{MODEL_FIELD}: {model} is a file, not a model folder")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise gr.Error(
            f"{MODEL_FIELD}: folder not found: {model} (nor is it a Hub model id such as "
            "Qwen/Qwen2.5-VL-7B-Instruct)"
        ) from None
    return model


def _load_local(model: str) -> LocalVLMBackend:
    try:
        return build_backend(model, batch_size=4, require_vision=True)
    except Exception as err:  # OSError, ValueError, ...: shown to the user, not a traceback
        where = "folder" if Path(model).is_dir() else "Hub id (no such folder here)"
        raise gr.Error(
            f"{MODEL_FIELD}: could not load {model} as a {where}: {_short(err)}"
        ) from err


def _connect(model: str, endpoint: str, api_key: str, continue_final: bool):
    """The endpoint's backend, after checking that the server answers and serves ``model``."""
    if not endpoint.startswith(("http://", "https://")):
        raise gr.Error(
            f"{ENDPOINT_FIELD}: must start with http:// or https:// (e.g. "
            f"http://localhost:8000/v1), got {endpoint!r}"
        )
    try:
        backend = build_backend(
            model, endpoint, api_key=api_key, continue_final_message=continue_final
        )
    except ValueError as err:
        raise gr.Error(f"{MODEL_FIELD}: {_short(err)}") from None
    try:
        served = backend.served_models()
    except BackendError as err:
        raise gr.Error(f"{ENDPOINT_FIELD}: {_short(err)}") from None
    if served is not None and model not in served:
        raise gr.Error(
            f"{MODEL_FIELD}: {endpoint} serves {', '.join(served) or 'no model'}, not {model!r} "
            "(with an endpoint, give the served model name)"
        )
    return backend


def _owner_key(endpoint: str) -> str:
    """The Space owner's API key, for the owner's default endpoint only: a key set in the
    Space's secrets is never sent to an endpoint a visitor types."""
    if not endpoint or endpoint != _defaults.endpoint:
        return ""
    return os.environ.get(ENV_API_KEY) or os.environ.get("OPENAI_API_KEY") or ""


def get_backend(
    name: str,
    model_path: str = "",
    endpoint: str = "",
    api_key: str = "",
    continue_final: bool = False,
):
    """The answering model for a choice of ``MODELS``, built once per process and model
    (for "your model": per folder or Hub id, or per served name and endpoint)."""
    if name not in MODELS:
        raise gr.Error(f"model must be one of {MODELS}, got {name!r}")
    model_path, endpoint = (model_path or "").strip(), (endpoint or "").strip()
    api_key = (api_key or "").strip() or _owner_key(endpoint)
    with _lock:
        if name != CUSTOM:
            key: tuple = (name,)
            if key not in _backends:
                if name == REFERENCE:
                    _backends[key] = build_backend(REFERENCE_MODEL, batch_size=4)
                elif name == SCRIPTED:
                    _backends[key] = ScriptedTinyVLM()
                else:
                    _backends[key] = build_backend("tiny", batch_size=4)
            return _backends[key]
        if not model_path:
            raise gr.Error(
                f"{MODEL_FIELD}: type a Hub model id (e.g. ChenShawn/DeepEyes-7B), a local "
                "model folder, or the served model name with an endpoint URL"
            )
        if endpoint:
            digest = hashlib.sha256(api_key.encode()).hexdigest()  # the key itself is not kept
            key = ("endpoint", model_path, endpoint, bool(continue_final), digest)
            if key not in _backends:
                _backends[key] = _connect(model_path, endpoint, api_key, bool(continue_final))
            return _backends[key]
        key = ("local", _local_model(model_path))
        if key not in _backends:
            loaded = [k for k in _backends if k[0] == "local"]
            for old in loaded[: max(0, len(loaded) - MAX_CUSTOM_LOCAL + 1)]:
                del _backends[old]  # oldest first, before the new one loads (memory)
            gc.collect()
            _backends[key] = _load_local(key[1])
        return _backends[key]


def _config(
    model: str, coords: str | None = None, judge: str | None = None, preset: str | None = None
) -> FaithfulnessConfig:
    """The measurement of ``model``: the reference VLM's own needs (``model_fields``:
    Qwen3-VL's 0..1000 frame, sufficiency as its only judge metric), the tiny models'
    defaults, or for "your model" the frame, judge metrics and preset chosen on the page."""
    common: dict[str, Any] = {"visual_interventions": VISUAL, "n_resamples": 200, "seed": SEED}
    if model == REFERENCE:
        fields = model_fields(REFERENCE_MODEL)
        return FaithfulnessConfig(
            judge_metrics=fields["judge_metrics"],
            box_rules=BoxRules(coords=fields["coords"]),
            **common,
        )
    if model != CUSTOM:
        return FaithfulnessConfig(**common)
    suggested = _suggested("")
    coords, judge = coords or suggested["coords"], judge or suggested["judge"]
    preset = preset or NO_PRESET
    if coords not in {value for _, value in COORDS}:
        raise gr.Error(f"{COORDS_FIELD}: one of {[v for _, v in COORDS]}, got {coords!r}")
    if judge not in JUDGES:
        raise gr.Error(f"{JUDGE_FIELD}: one of {list(JUDGES)}, got {judge!r}")
    if preset not in PRESET_CHOICES:
        raise gr.Error(f"{PRESET_FIELD}: one of {list(PRESET_CHOICES)}, got {preset!r}")
    common["judge_metrics"] = JUDGES[judge]
    if preset != NO_PRESET:  # the preset's prompts and tool rules, in the chosen frame
        return preset_config(preset, box_rules={"coords": coords}, **common)
    return FaithfulnessConfig(box_rules=BoxRules(coords=coords), **common)


# ------------------------------------------------------------------------ views
def annotate(trace: Trace) -> Image.Image | None:
    """The full image with every zoom box drawn and numbered in call order."""
    if trace.image is None:
        return None
    scale = max(1, DISPLAY_SIDE // max(trace.image.size))  # small images: enlarge, sharp
    image = trace.image.convert("RGB")
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 150))
    font = ImageFont.load_default(size=max(12, max(image.size) // 32))
    for n, step in enumerate(trace.zoom_steps, start=1):
        if step.box is None:
            continue
        colour = _PALETTE[(n - 1) % len(_PALETTE)]
        box = tuple(v * scale for v in (step.box.x1, step.box.y1, step.box.x2, step.box.y2))
        box = (box[0], box[1], box[2] - 1, box[3] - 1)
        draw.rectangle(box, outline=colour, width=width)
        label = f"{n}" + (f" {step.label}" if step.label else "")
        left, top = box[0] + width, box[1] + width
        bounds = draw.textbbox((left, top), label, font=font)
        draw.rectangle(bounds, fill=colour)
        draw.text((left, top), label, fill="white", font=font)
    return image


def _thumbnail(image: Image.Image, side: int = 160) -> str:
    image = image.convert("RGB").copy()
    scale = side / max(image.size)
    image = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.NEAREST
    )
    return png_data_uri(image)


def steps_html(trace: Trace) -> str:
    """The chain of thought, one row per step, each crop beside its zoom call."""
    rows = [f"<p><b>Question:</b> {html.escape(trace.question)}</p>"]
    n_zoom = 0
    for step in trace.steps:
        if step.kind == "text":
            rows.append(f"<div class='step'><div class='say'>{html.escape(step.text)}</div></div>")
            continue
        n_zoom += 1
        colour = _PALETTE[(n_zoom - 1) % len(_PALETTE)]
        call = f"zoom {n_zoom}: bbox_2d={step.bbox}" + (
            f", label={step.label!r}" if step.label else ""
        )
        crop = (
            f"<img src='{_thumbnail(step.crop)}' style='border:3px solid {colour};max-width:160px'>"
            if step.crop is not None
            else f"<span style='color:#b91c1c'>refused: {html.escape(step.error or 'no crop')}</span>"
        )
        rows.append(
            f"<div class='step' style='display:flex;gap:12px;align-items:center'>"
            f"<div class='say' style='flex:1'><code>{html.escape(call)}</code></div>{crop}</div>"
        )
    answer = html.escape(trace.answer) if trace.answer is not None else "<i>none</i>"
    rows.append(f"<p><b>Answer:</b> {answer}")
    if trace.reference is not None:
        rows.append(f" &nbsp; <b>reference:</b> {html.escape(trace.reference)}")
    rows.append("</p>")
    if trace.errors:
        rows.append(
            "<p style='color:#b91c1c'><b>Invalid trace:</b> "
            + html.escape("; ".join(trace.errors))
            + "</p>"
        )
        if trace.metadata.get("response") is not None:
            raw = repr(trace.metadata["response"][:400])
            rows.append(f"<p>raw model output: <code>{html.escape(raw)}</code></p>")
    return "\n".join(rows)


def show_trace(trace: Trace):
    return trace, annotate(trace), steps_html(trace)


# ---------------------------------------------------------------------- actions
@contextmanager
def _endpoint_errors() -> Iterator[None]:
    """A request the endpoint refuses (``BackendError``) as an error naming the field."""
    try:
        yield
    except BackendError as err:
        raise gr.Error(f"{ENDPOINT_FIELD}: {_short(err)}") from None


def generate_trace(
    image: Image.Image | None,
    question: str,
    reference: str,
    model: str,
    model_path: str = "",
    coords: str | None = None,
    judge: str | None = None,
    preset: str | None = None,
    endpoint: str = "",
    api_key: str = "",
    continue_final: bool = False,
) -> Trace:
    """Run the model with the zoom-in tool on one image and question."""
    if image is None:
        raise gr.Error("Upload an image (or pick an example).")
    if not question or not question.strip():
        raise gr.Error("Write a question about the image.")
    side = {REFERENCE: REFERENCE_MAX_SIDE, CUSTOM: CUSTOM_MAX_SIDE}.get(model, MAX_SIDE)
    sample = {"id": "upload", "image": fit_image(image, side), "question": question.strip()}
    if reference and reference.strip():
        sample["reference"] = reference.strip()
    config = _config(model, coords, judge, preset)
    with _lock, _endpoint_errors():
        backend = get_backend(model, model_path, endpoint, api_key, continue_final)
        evaluator = FaithfulnessEvaluator(backend, config=config)
        return evaluator.generate_traces([sample])[0]


def read_trace_file(path: str | None, image_root: str = "") -> list[Trace]:
    """Traces of a ``.jsonl`` / ``.json`` file (bad records kept, with their errors)."""
    if not path:
        raise gr.Error("Upload a trace file (.jsonl or .json).")
    root = image_root.strip() or None
    try:
        traces = load_traces(path, image_root=root)
        if root is None and any("image file not found" in e for t in traces for e in t.errors):
            # an upload lands in a temporary folder without its images: try the bundled ones
            bundled = load_traces(path, image_root=SAMPLE_DIR)
            if sum(t.valid for t in bundled) > sum(t.valid for t in traces):
                traces = bundled
    except (OSError, ValueError) as err:
        raise gr.Error(f"Could not read {Path(path).name}: {err}") from err
    if not traces:
        raise gr.Error(f"{Path(path).name} holds no traces.")
    return traces


def _choices(traces: Sequence[Trace]) -> list[tuple[str, int]]:
    return [
        (f"{t.id or t.source} {'✓' if t.valid else '✗ invalid'}: {t.question[:60]}", i)
        for i, t in enumerate(traces)
    ]


def intervene(
    trace: Trace | None,
    model: str,
    model_path: str = "",
    coords: str | None = None,
    judge: str | None = None,
    preset: str | None = None,
    endpoint: str = "",
    api_key: str = "",
    continue_final: bool = False,
):
    """Answers of the model under each intervention, the intervened inputs, judge scores."""
    if trace is None:
        raise gr.Error("No trace yet: generate one or load a trace file.")
    if not trace.valid:
        message = "The trace is invalid, so there is nothing to intervene on: " + "; ".join(
            trace.errors
        )
        return [], [], "", message
    config = _config(model, coords, judge, preset)
    with _lock, _endpoint_errors():
        backend = get_backend(model, model_path, endpoint, api_key, continue_final)
        report = FaithfulnessEvaluator(backend, config=config).evaluate([trace])
        judged = FaithfulnessJudge(backend, match=config.match).score(
            [trace], metrics=config.judge_metrics
        )
    sample = report.samples[0]
    reference = trace.reference if trace.reference is not None else trace.answer
    texted = intervene_text([trace], kinds=config.text_corruptions, seed=config.seed)[0]
    rows = [
        ["original trace", "as generated", trace.answer, answers_match(trace.answer, reference)]
    ]
    for name, answer in sample["answers"].items():
        what = {
            "control": "untouched prefix (the baseline)",
            "T:offline": f"reasoning corrupted ({texted.metadata.get('text_edits', 0)} edits)",
        }.get(name, f"crops replaced: {name.removeprefix('V:')}")
        rows.append(
            [
                f"do({name})" if name != "control" else "control",
                what,
                answer,
                sample["correct"][name],
            ]
        )
    gallery = []
    for kind in config.visual_interventions:
        for n, crop in enumerate(intervene_visual([trace], kind, seed=config.seed)[0].crops, 1):
            gallery.append((crop, f"{kind}, zoom {n}"))
    corrupted = "\n".join(s.text for s in texted.steps if s.kind == "text")
    lines = [
        f"Answers are compared with **{reference!r}** "
        f"({'reference' if trace.reference is not None else 'the trace’s own answer'}).",
        "",
    ]
    changed = [r[0] for r in rows[2:] if r[2] != rows[1][2]]
    lines.append(
        "Answer changed under: " + ", ".join(changed) if changed else "The answer never changed."
    )
    if not config.judge_metrics:
        lines += ["", "No judge: the model was not asked to judge its crops."]
        return rows, gallery, corrupted, "\n".join(lines)
    lines += ["", "| judge metric | score | judge reply |", "|---|---|---|"]
    for key, metric, scores, replies in (
        ("reliability", "reliability (0-1)", judged.reliability, judged.reliability_replies),
        (
            "sufficiency",
            "sufficiency (crops only, 0/1)",
            judged.sufficiency,
            judged.sufficiency_replies,
        ),
    ):
        if key not in config.judge_metrics:  # the reference VLM is only asked sufficiency
            continue
        score = "unscored" if not scores or scores[0] is None else f"{scores[0]:.2f}"
        reply = (replies[0] or "").replace("|", "\\|").replace("\n", " ")[:120] if replies else ""
        lines.append(f"| {metric} | {score} | `{reply}` |")
    return rows, gallery, corrupted, "\n".join(lines)


# --------------------------------------------------------------------------- UI
def _examples() -> list[list[Any]]:
    """ZoomVQA test questions (the reference VLM's), then the scripted policy's samples."""
    rows = []
    zoomvqa = [
        json.loads(line)
        for line in ZOOMVQA_QUESTIONS.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    picked = [r for r in zoomvqa if r["question_type"] == "zoom_needed"][:6]
    picked += [r for r in zoomvqa if r["question_type"] == "global"][:2]
    for record in picked:
        rows.append(
            [
                str(ZOOMVQA_QUESTIONS.parent / record["image"]),
                record["question"],
                record["reference"],
            ]
        )
    for line in SAMPLE_QUESTIONS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            rows.append(
                [str(SAMPLE_DIR / record["image"]), record["question"], record.get("reference", "")]
            )
    return rows


def build_demo(defaults: Defaults | None = None) -> gr.Blocks:
    """The inspector's Blocks (tests launch it headless; ``main`` serves it); ``defaults``
    (else the environment's, ``Defaults.from_env``) say which model the page opens with."""
    global _defaults
    _defaults = defaults if defaults is not None else Defaults.from_env()
    initial = _defaults.settings()

    def on_generate(
        image,
        question,
        reference,
        model,
        model_path,
        coords,
        judge,
        preset,
        endpoint,
        api_key,
        continue_final,
    ):
        return show_trace(
            generate_trace(
                image,
                question,
                reference,
                model,
                model_path,
                coords,
                judge,
                preset,
                endpoint,
                api_key,
                continue_final,
            )
        )

    def on_model_typed(model_path, endpoint):
        """Typing a model picks "your model" and the settings its name suggests."""
        if not model_path.strip():
            return gr.update(), gr.update(), gr.update(), gr.update()
        suggested = _suggested(model_path.strip(), endpoint.strip())
        return CUSTOM, suggested["coords"], suggested["judge"], suggested["preset"]

    def on_load(path, image_root):
        traces = read_trace_file(path, image_root)
        first = next((i for i, t in enumerate(traces) if t.valid), 0)
        return (
            traces,
            gr.Dropdown(choices=_choices(traces), value=first),
            *show_trace(traces[first]),
        )

    def on_start(*spec):
        """The page opens on the default model's own trace (the reference VLM's unless the
        Space was started with a model) for a zoom-needed ZoomVQA question."""
        image_path, question, reference = _examples()[0]
        trace = generate_trace(Image.open(image_path), question, reference, *spec)
        return [trace], gr.Dropdown(choices=_choices([trace]), value=0), *show_trace(trace)

    def on_select(traces, index):
        if not traces or index is None:
            raise gr.Error("Load a trace file first.")
        return show_trace(traces[int(index)])

    with gr.Blocks(title="hf-faithful faithfulness inspector") as demo:
        gr.Markdown(
            "# Faithfulness inspector\n"
            "Does a model that *thinks with images* use what it zooms into and what it "
            "writes? ([arXiv 2510.23482](https://arxiv.org/abs/2510.23482)) Make or load a "
            "chain of thought, then intervene on the crops (do(V)) or the reasoning (do(T)) "
            "and watch the answer. The default model is hf-faithful's reference VLM, a small "
            "Qwen3-VL trained to zoom on ZoomVQA (coloured squares, each with a small dot "
            "that only a crop shows): its tool use is learned, so what the interventions "
            "find is measured, not built in. The teaching option forces a tiny random "
            "model to a visible rule (zoom where the question points, name the colour of "
            "the last image): faithful by construction. Or inspect **your model**: a Hub "
            "id, a local folder, or the served name behind an OpenAI-compatible endpoint."
        )
        trace_state = gr.State(None)
        traces_state = gr.State([])
        model = gr.Radio(list(MODELS), value=initial["model"], label="model under test (and judge)")
        with gr.Accordion("your model", open=bool(_defaults.model)):
            with gr.Row():
                model_path = gr.Textbox(
                    value=_defaults.model,
                    label=MODEL_FIELD,
                    placeholder="ChenShawn/DeepEyes-7B, Qwen/Qwen2.5-VL-7B-Instruct, "
                    "/path/to/folder, or the served name with an endpoint",
                    scale=3,
                )
                coords = gr.Dropdown(list(COORDS), value=initial["coords"], label=COORDS_FIELD)
                judge = gr.Dropdown(
                    list(JUDGE_CHOICES),
                    value=initial["judge"],
                    label="the model as its own judge",
                )
                preset = gr.Dropdown(
                    list(PRESET_CHOICES),
                    value=initial["preset"],
                    label=PRESET_FIELD,
                )
            with gr.Accordion(
                "OpenAI-compatible endpoint (vLLM serve, SGLang): optional",
                open=bool(_defaults.endpoint),
            ):
                with gr.Row():
                    endpoint = gr.Textbox(
                        value=_defaults.endpoint,
                        label=ENDPOINT_FIELD,
                        placeholder="http://localhost:8000/v1",
                    )
                    api_key = gr.Textbox(value="", label="API key", type="password")
                    continue_final = gr.Checkbox(
                        value=_defaults.continue_final_message,
                        label="the server continues a prefilled answer (vLLM, SGLang)",
                    )
        spec = [model, model_path, coords, judge, preset, endpoint, api_key, continue_final]
        model_path.input(
            on_model_typed,
            [model_path, endpoint],
            [model, coords, judge, preset],
            api_name=False,
            show_progress="hidden",
        )
        endpoint.input(lambda: CUSTOM, None, model, api_name=False, show_progress="hidden")
        with gr.Tabs():
            with gr.Tab("Image and question"):
                with gr.Row():
                    image = gr.Image(type="pil", label="image", height=260)
                    with gr.Column():
                        question = gr.Textbox(label="question")
                        reference = gr.Textbox(label="reference answer (optional)")
                        generate_button = gr.Button("Think with the image", variant="primary")
                gr.Examples(
                    _examples(),
                    [image, question, reference],
                    label="bundled samples",
                    examples_per_page=4,
                )
            with gr.Tab("Trace file"):
                with gr.Row():
                    trace_file = gr.File(
                        label="traces (.jsonl / .json: DeepEyes text, TRL messages or steps)",
                        file_types=[".jsonl", ".json"],
                        type="filepath",
                    )
                    with gr.Column():
                        image_root = gr.Textbox(
                            label="image folder for relative paths (default: the file's)"
                        )
                        sample_button = gr.Button(
                            "Use the bundled sample traces (made for the teaching policy)"
                        )
                        load_button = gr.Button("Load", variant="primary")
                picker = gr.Dropdown(label="trace", choices=[], interactive=True)
        with gr.Row():
            annotated = gr.Image(
                label="zoom boxes on the image", type="pil", format="png", height=320
            )
            with gr.Column():
                steps = gr.HTML(label="chain of thought")
        gr.Markdown("## Interventions")
        intervene_button = gr.Button("Intervene again")
        answers = gr.Dataframe(
            headers=["condition", "what the model saw", "answer", "correct"],
            label="answers under intervention",
            interactive=False,
        )
        with gr.Row():
            intervened = gr.Gallery(
                label="crops under do(V)", columns=4, height=180, object_fit="contain"
            )
            corrupted = gr.Textbox(label="reasoning under do(T)", lines=4)
        verdict = gr.Markdown()

        views = [trace_state, annotated, steps]
        outcome = [answers, intervened, corrupted, verdict]
        generate_button.click(
            on_generate, [image, question, reference, *spec], views, api_name="generate_trace"
        ).success(intervene, [trace_state, *spec], outcome, api_name=False)
        sample_button.click(
            lambda: on_load(str(SAMPLE_TRACES), ""),
            None,
            [traces_state, picker, *views],
            api_name="load_samples",
        ).success(intervene, [trace_state, *spec], outcome, api_name=False)
        # the page opens on the reference VLM's own trace of a ZoomVQA question
        demo.load(on_start, spec, [traces_state, picker, *views], api_name=False).success(
            intervene, [trace_state, *spec], outcome, api_name=False
        )
        load_button.click(
            on_load,
            [trace_file, image_root],
            [traces_state, picker, *views],
            api_name="load_traces",
        ).success(intervene, [trace_state, *spec], outcome, api_name=False)
        picker.input(on_select, [traces_state, picker], views, api_name="select_trace").success(
            intervene, [trace_state, *spec], outcome, api_name=False
        )
        intervene_button.click(intervene, [trace_state, *spec], outcome, api_name="intervene")
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the inspector; flags (else ``HF_FAITHFUL_INSPECTOR_*``) set the default model,
    which is loaded (or its endpoint checked) before the page is served."""
    parser = argparse.ArgumentParser(description="Serve the faithfulness inspector.")
    try:
        env = Defaults.from_env()
    except ValueError as err:
        parser.error(str(err))
    parser.add_argument(
        "--model",
        default=env.model,
        help=f"default model: Hub id, local folder or served name (${ENV_MODEL})",
    )
    parser.add_argument(
        "--endpoint",
        default=env.endpoint,
        help=f"OpenAI-compatible base URL serving --model (${ENV_ENDPOINT}); its API key: "
        f"${ENV_API_KEY} or $OPENAI_API_KEY",
    )
    parser.add_argument(
        "--coords",
        choices=[v for _, v in COORDS],
        default=env.coords,
        help=f"its box frame (${ENV_COORDS}; default: what its name suggests)",
    )
    parser.add_argument(
        "--judge",
        choices=list(JUDGES),
        default=env.judge,
        help=f"what it judges as its own judge (${ENV_JUDGE}; default: what its name suggests)",
    )
    parser.add_argument(
        "--preset",
        choices=list(PRESET_CHOICES),
        default=env.preset,
        help=f"prompt preset (${ENV_PRESET}; default: 'deepeyes' for a DeepEyes name)",
    )
    parser.add_argument(
        "--continue-final-message",
        action="store_true",
        default=env.continue_final_message,
        help=f"the endpoint continues a prefilled answer: vLLM, SGLang (${ENV_CONTINUE}=1)",
    )
    args = parser.parse_args(argv)
    try:
        defaults = Defaults(
            model=args.model,
            endpoint=args.endpoint,
            coords=args.coords,
            judge=args.judge,
            preset=args.preset,
            continue_final_message=args.continue_final_message,
        )
    except ValueError as err:
        parser.error(str(err))
    global _defaults
    _defaults = defaults  # before the check: the owner's endpoint gets the owner's API key
    if defaults.model:  # fail at launch, not on every visitor's first click
        try:
            get_backend(
                CUSTOM, defaults.model, defaults.endpoint, "", defaults.continue_final_message
            )
        except gr.Error as err:
            parser.exit(2, f"error: {err.message}\n")
    build_demo(defaults).launch()


if __name__ == "__main__":
    main()

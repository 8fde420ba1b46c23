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

One file of ~480 lines on purpose: a Space runs ``app.py`` as uploaded, and the protocol
it shows (messages, images, backends, the measurement) is imported from ``hf_faithful``;
what stays here is the demo policy, the views and the UI.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Sequence
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
from hf_faithful.mcot.answers import answers_match
from hf_faithful.mcot.backends import build_backend
from hf_faithful.mcot.images import fit_image, png_data_uri
from hf_faithful.mcot.messages import message_text, tool_call_text
from hf_faithful.mcot.records import load_traces
from hf_faithful.mcot.trace import Trace
from hf_faithful.mcot.zoom import BoxRules
from hf_faithful.testing.tiny_vlm import script_generation

REFERENCE = "reference VLM (trained here to zoom on ZoomVQA)"
SCRIPTED = "teaching: tiny Qwen3-VL, scripted policy"
RAW = "tiny Qwen3-VL, random weights (unscripted)"
MODELS = (REFERENCE, SCRIPTED, RAW)
VISUAL = ("noise_gaussian", "noise_uniform", "blank", "other_region")
MAX_SIDE = 448  # uploads for the tiny models are downscaled: their cost grows with the pixels
REFERENCE_MAX_SIDE = 768  # ZoomVQA's canvas: the reference VLM's crops need full resolution
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


_backends: dict[str, Any] = {}
_lock = threading.Lock()


def get_backend(name: str):
    """The answering model for a choice of ``MODELS`` (built once per process)."""
    if name not in MODELS:
        raise gr.Error(f"model must be one of {MODELS}, got {name!r}")
    if name not in _backends:
        if name == REFERENCE:
            _backends[name] = build_backend("reference", batch_size=4)
        elif name == SCRIPTED:
            _backends[name] = ScriptedTinyVLM()
        else:
            _backends[name] = build_backend("tiny", batch_size=4)
    return _backends[name]


def _config(model: str) -> FaithfulnessConfig:
    """The measurement of ``model``: the reference VLM boxes in Qwen3-VL's 0..1000 frame and
    judges only sufficiency (it was never taught the reliability prompt)."""
    if model == REFERENCE:
        return FaithfulnessConfig(
            visual_interventions=VISUAL,
            judge_metrics=("sufficiency",),
            box_rules=BoxRules(coords="normalized_1000"),
            n_resamples=200,
            seed=SEED,
        )
    return FaithfulnessConfig(visual_interventions=VISUAL, n_resamples=200, seed=SEED)


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
def generate_trace(image: Image.Image | None, question: str, reference: str, model: str) -> Trace:
    """Run the model with the zoom-in tool on one image and question."""
    if image is None:
        raise gr.Error("Upload an image (or pick an example).")
    if not question or not question.strip():
        raise gr.Error("Write a question about the image.")
    side = REFERENCE_MAX_SIDE if model == REFERENCE else MAX_SIDE
    sample = {"id": "upload", "image": fit_image(image, side), "question": question.strip()}
    if reference and reference.strip():
        sample["reference"] = reference.strip()
    with _lock:
        evaluator = FaithfulnessEvaluator(get_backend(model), config=_config(model))
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


def intervene(trace: Trace | None, model: str):
    """Answers of the model under each intervention, the intervened inputs, judge scores."""
    if trace is None:
        raise gr.Error("No trace yet: generate one or load a trace file.")
    if not trace.valid:
        message = "The trace is invalid, so there is nothing to intervene on: " + "; ".join(
            trace.errors
        )
        return [], [], "", message
    backend = get_backend(model)
    config = _config(model)
    with _lock:
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


def build_demo() -> gr.Blocks:
    """The inspector's Blocks (tests launch it headless; ``main`` serves it)."""

    def on_generate(image, question, reference, model):
        return show_trace(generate_trace(image, question, reference, model))

    def on_load(path, image_root):
        traces = read_trace_file(path, image_root)
        first = next((i for i, t in enumerate(traces) if t.valid), 0)
        return (
            traces,
            gr.Dropdown(choices=_choices(traces), value=first),
            *show_trace(traces[first]),
        )

    def on_start():
        """The page opens on the reference VLM's own trace for a zoom-needed ZoomVQA question."""
        image_path, question, reference = _examples()[0]
        trace = generate_trace(Image.open(image_path), question, reference, REFERENCE)
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
            "the last image): faithful by construction."
        )
        trace_state = gr.State(None)
        traces_state = gr.State([])
        model = gr.Radio(list(MODELS), value=REFERENCE, label="model under test (and judge)")
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
            on_generate, [image, question, reference, model], views, api_name="generate_trace"
        ).success(intervene, [trace_state, model], outcome, api_name=False)
        sample_button.click(
            lambda: on_load(str(SAMPLE_TRACES), ""),
            None,
            [traces_state, picker, *views],
            api_name="load_samples",
        ).success(intervene, [trace_state, model], outcome, api_name=False)
        # the page opens on the reference VLM's own trace of a ZoomVQA question
        demo.load(on_start, None, [traces_state, picker, *views], api_name=False).success(
            intervene, [trace_state, model], outcome, api_name=False
        )
        load_button.click(
            on_load,
            [trace_file, image_root],
            [traces_state, picker, *views],
            api_name="load_traces",
        ).success(intervene, [trace_state, model], outcome, api_name=False)
        picker.input(on_select, [traces_state, picker], views, api_name="select_trace").success(
            intervene, [trace_state, model], outcome, api_name=False
        )
        intervene_button.click(intervene, [trace_state, model], outcome, api_name="intervene")
    return demo


if __name__ == "__main__":
    build_demo().launch()

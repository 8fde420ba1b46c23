"""Interventions on a trace: ``do(V)`` replaces the crops, ``do(T)`` corrupts the reasoning.

Each function returns new traces (the originals are untouched) with
``metadata["intervention"]`` naming what was done, so the answer can then be
regenerated from the intervened prefix by the model under test.

Visual kinds (``VISUAL_INTERVENTIONS``): ``noise_gaussian`` (N(128, 64) pixels, the
paper's "random noise"), ``noise_uniform`` (U{0..255}), ``blank`` (uniform gray 128),
``other_region`` (a same-size crop of the same image with the least overlap with the
original box), ``shuffle`` (each trace receives the crops of another trace).
Textual: a rewriter model with the shipped ``rewrite_reasoning`` prompt, or offline
corruptions of numbers, colors, directions and negations (``TEXT_CORRUPTIONS``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from hf_faithful.faithfulness.prompts import load_prompt
from hf_faithful.mcot.backends import AnswerBackend
from hf_faithful.mcot.trace import Trace
from hf_faithful.mcot.zoom import Box, BoxRules, finish_crop

__all__ = [
    "TEXT_CORRUPTIONS",
    "VISUAL_INTERVENTIONS",
    "corrupt_text",
    "intervene_text",
    "intervene_visual",
]

VISUAL_INTERVENTIONS = ("noise_gaussian", "noise_uniform", "blank", "other_region", "shuffle")
TEXT_CORRUPTIONS = ("numbers", "colors", "directions", "negations")

_COLORS = "red green blue yellow orange purple pink brown black white gray grey silver gold".split()
_DIRECTIONS = {
    "left": "right",
    "right": "left",
    "top": "bottom",
    "bottom": "top",
    "up": "down",
    "down": "up",
    "above": "below",
    "below": "above",
    "upper": "lower",
    "lower": "upper",
    "north": "south",
    "south": "north",
    "east": "west",
    "west": "east",
    "horizontal": "vertical",
    "vertical": "horizontal",
}
_NUMBER_WORDS = "zero one two three four five six seven eight nine ten".split()
_NUMBER_RE = re.compile(
    r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)|\b(?:{})\b".format("|".join(_NUMBER_WORDS)), re.I
)
_COLOR_RE = re.compile(r"\b({})\b".format("|".join(_COLORS)), re.I)
_DIRECTION_RE = re.compile(r"\b({})\b".format("|".join(_DIRECTIONS)), re.I)
# "is not" -> "is", "isn't" -> "is", "is" -> "is not" (and the other auxiliaries).
_AUX = "is|are|was|were|can|could|does|do|did|has|have|will|should"
_NEGATION_RE = re.compile(rf"\b({_AUX})(?:\s+not\b|n't\b)|\b(cannot)\b|\b({_AUX})\b", re.I)


def _same_case(original: str, new: str) -> str:
    if original.isupper() and len(original) > 1:
        return new.upper()
    return new[:1].upper() + new[1:] if original[:1].isupper() else new


def _corrupt_number(match: re.Match, rng: np.random.Generator) -> str:
    token = match.group(0)
    if token.lower() in _NUMBER_WORDS:
        value = _NUMBER_WORDS.index(token.lower())
        choices = [w for i, w in enumerate(_NUMBER_WORDS) if i != value and abs(i - value) <= 3]
        return _same_case(token, str(rng.choice(choices)))
    if "." in token:
        decimals = len(token.split(".")[1])
        factor = float(rng.choice([0.5, 1.5, 2.0]))
        return f"{float(token) * factor:.{decimals}f}"
    value = int(token)
    delta = int(rng.integers(1, 4))
    new = value + delta if value - delta < 0 or rng.random() < 0.5 else value - delta
    return str(new)


def _corrupt_color(match: re.Match, rng: np.random.Generator) -> str:
    token = match.group(0)
    same = {token.lower()} | ({"gray", "grey"} if token.lower() in ("gray", "grey") else set())
    return _same_case(token, str(rng.choice([c for c in _COLORS if c not in same])))


def _corrupt_direction(match: re.Match, rng: np.random.Generator) -> str:
    token = match.group(0)
    return _same_case(token, _DIRECTIONS[token.lower()])


def _corrupt_negation(match: re.Match, rng: np.random.Generator) -> str:
    negated, cannot, plain = match.groups()
    if negated:
        return negated
    if cannot:
        return _same_case(cannot, "can")
    return f"{plain} not"


_CORRUPTORS: dict[str, tuple[re.Pattern, Callable[[re.Match, np.random.Generator], str]]] = {
    "numbers": (_NUMBER_RE, _corrupt_number),
    "colors": (_COLOR_RE, _corrupt_color),
    "directions": (_DIRECTION_RE, _corrupt_direction),
    "negations": (_NEGATION_RE, _corrupt_negation),
}


def corrupt_text(
    text: str,
    rng: np.random.Generator | int = 0,
    kinds: Sequence[str] = TEXT_CORRUPTIONS,
) -> tuple[str, int]:
    """Inject mistakes into ``text`` offline; returns ``(corrupted, number_of_edits)``.

    Every number, color word, direction word and auxiliary verb is changed (numbers by
    1-3 or a factor, colors to another color, directions to their opposite, negations
    flipped). A text with none of them is negated as a whole, so no text is left intact.
    """
    unknown = set(kinds) - set(TEXT_CORRUPTIONS)
    if unknown:
        raise ValueError(f"kinds must be among {TEXT_CORRUPTIONS}, got {sorted(unknown)}")
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    edits = 0
    for kind in kinds:
        pattern, replace = _CORRUPTORS[kind]
        text, n = pattern.subn(lambda m, replace=replace: replace(m, rng), text)
        edits += n
    if edits == 0 and text.strip():
        stripped = text.strip()
        text = "It is not the case that " + stripped[:1].lower() + stripped[1:]
        edits = 1
    return text, edits


def _noise_like(crop: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    shape = (crop.height, crop.width, 3)
    if kind == "noise_gaussian":
        pixels = rng.normal(128.0, 64.0, size=shape).clip(0, 255)
    elif kind == "noise_uniform":
        pixels = rng.integers(0, 256, size=shape)
    else:  # blank
        pixels = np.full(shape, 128)
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def _iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    h = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = w * h
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def _other_region(
    image: Image.Image, box: Box, rng: np.random.Generator, n_candidates: int = 64
) -> tuple[Image.Image, Box]:
    width, height = image.size
    w, h = min(round(box.width), width), min(round(box.height), height)
    xs = rng.integers(0, width - w + 1, size=n_candidates)
    ys = rng.integers(0, height - h + 1, size=n_candidates)
    candidates = [Box(float(x), float(y), float(x + w), float(y + h)) for x, y in zip(xs, ys)]
    best = min(candidates, key=lambda c: _iou(c, box))  # first of the least overlapping
    return image.crop((int(best.x1), int(best.y1), int(best.x2), int(best.y2))), best


def intervene_visual(
    traces: Sequence[Trace], kind: str, seed: int = 0, rules: BoxRules | None = None
) -> list[Trace]:
    """``do(V)``: copies of ``traces`` with every crop replaced according to ``kind``.

    Traces without crops are returned unchanged (copied). ``shuffle`` needs at least two
    traces with crops; trace ``i`` gets the crops of another trace (cycled if it has
    fewer), so each crop is real but answers a different question. ``rules``: the crop
    handling of the tool (``crop_resize``), applied to ``other_region``'s new crops so
    they reach the model as the tool's own would.
    """
    if kind not in VISUAL_INTERVENTIONS:
        raise ValueError(f"visual intervention must be one of {VISUAL_INTERVENTIONS}, got {kind!r}")
    rng = np.random.default_rng(seed)
    out = [t.copy() for t in traces]
    for trace in out:
        trace.metadata["intervention"] = f"visual:{kind}"
    if kind == "shuffle":
        with_crops = [i for i, t in enumerate(out) if t.crops]
        if len(with_crops) < 2:
            raise ValueError("the 'shuffle' intervention needs at least 2 traces with crops")
        order = [with_crops[i] for i in rng.permutation(len(with_crops))]
        donors = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}
        for target, donor in donors.items():
            donor_crops = traces[donor].crops
            steps = [s for s in out[target].steps if s.kind == "zoom" and s.crop is not None]
            for j, step in enumerate(steps):
                step.crop = donor_crops[j % len(donor_crops)]
            out[target].metadata["crops_from"] = traces[donor].id or donor
        return out
    for trace in out:
        for step in trace.steps:
            if step.kind != "zoom" or step.crop is None:
                continue
            if kind == "other_region":
                if trace.image is None or step.box is None:
                    raise ValueError(
                        f"trace {trace.id or trace.source}: 'other_region' needs the full image"
                    )
                crop, step.box = _other_region(trace.image, step.box, rng)
                step.crop = finish_crop(crop, rules)
            else:
                step.crop = _noise_like(step.crop, kind, rng)
    return out


def _clean_rewrite(text: str) -> str:
    text = re.sub(r"</?think>", "", text).strip()
    text = re.sub(r"^(rewritten reasoning|reasoning)\s*:\s*", "", text, flags=re.I)
    return text.strip().strip('"').strip()


def intervene_text(
    traces: Sequence[Trace],
    *,
    rewriter: AnswerBackend | None = None,
    prompt: str | None = None,
    kinds: Sequence[str] = TEXT_CORRUPTIONS,
    seed: int = 0,
    max_new_tokens: int = 256,
) -> list[Trace]:
    """``do(T)``: copies of ``traces`` with every reasoning step corrupted.

    With a ``rewriter`` backend each step is rewritten with ``prompt`` (default: the
    shipped ``rewrite_reasoning`` prompt, fields ``{question}`` and ``{reasoning}``), all
    steps in one batch; an empty rewrite falls back to the offline corruption. Without
    one, :func:`corrupt_text` is used. ``metadata["text_edits"]`` counts offline edits.
    """
    rng = np.random.default_rng(seed)
    out = [t.copy() for t in traces]
    steps = [(t, s) for t in out for s in t.steps if s.kind == "text"]
    rewrites: list[str] = [""] * len(steps)
    if rewriter is not None and steps:
        template = prompt if prompt is not None else load_prompt("rewrite_reasoning")
        requests = [
            [{"role": "user", "content": template.format(question=t.question, reasoning=s.text)}]
            for t, s in steps
        ]
        rewrites = [_clean_rewrite(r) for r in rewriter.answer(requests, max_new_tokens)]
    for trace in out:
        trace.metadata["intervention"] = "textual:" + ("rewriter" if rewriter else "offline")
        trace.metadata["text_edits"] = 0
    for (trace, step), rewrite in zip(steps, rewrites):
        if rewrite and rewrite != step.text:
            step.text = rewrite
            continue
        step.text, edits = corrupt_text(step.text, rng, kinds)
        trace.metadata["text_edits"] += edits
    return out

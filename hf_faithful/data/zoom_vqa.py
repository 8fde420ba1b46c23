"""ZoomVQA: a procedural visual QA set where some questions need the zoom-in tool and some don't.

Why it exists: faithfulness figures need a subject that has *learned* to think with images.
That needs data where zooming is necessary for some questions and useless for others,
with the target's box known, so crops can be scored. Every image is a 768x768 canvas with
3-6 coloured squares on a 4x4 grid of 192-px cells (one square per cell, jittered inside
it, each colour used once). A small dot (48 px) of one of four mark colours sits on every
square.

- ``zoom_needed``: "What colour is the dot on the square in row 2, column 3?" The square
  is easy to find in a downscaled view of the whole image, but the dot is only visible in
  a crop at full
  resolution. The reference VLM sees every image at most 128x128: the whole image 6x
  smaller (the dot becomes 8 px, 6% of the 32-px patch group that makes one vision token,
  mixed into the square's colour), a one-cell crop 1.5x smaller (32 px, a whole token).
  The target is named by its grid cell, not its colour: the reference VLM trained here
  on 2 CPU cores learned where the squares are but not which square has which colour
  (see ``scripts/train_reference_vlm.py``). A digit was tried first: it never learned to
  read digit shapes either, even in legible crops, while it reads the dot's colour.
- ``global``: "How many squares are in the image?" or "Is there a blue square in the
  image?": answerable from the downscaled view alone.

Columns are DeepEyes-compatible (``image``, ``question``, ``answer``, ``prompt``), so
``load_deepeyes`` and ``SCCMRewardTrainer`` take a split as it is; besides them:
``id``, ``question_type``, ``target_box`` (absolute pixels ``[x1, y1, x2, y2]`` of the
asked square, ``[]`` for global questions), ``target_cell`` (``[row, col]``, ``[]`` when
global), ``target_color`` and ``n_objects``. Generation is seeded per split: the same
seed gives the same bytes on every machine with the same Pillow.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

__all__ = [
    "CANVAS",
    "CHANCE",
    "COLORS",
    "GRID",
    "MARKS",
    "QUESTION_TYPES",
    "ZoomVQASample",
    "build_zoom_vqa",
    "export_questions",
    "cell_box_1000",
    "make_sample",
    "sample_stream",
]

CANVAS = 768
GRID = 4
CELL = CANVAS // GRID
QUESTION_TYPES = ("zoom_needed", "global")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (50, 80, 220),
    "yellow": (235, 210, 50),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 210),
    "pink": (240, 130, 190),
}
# The dots' colours: none of them is a square colour, so a crop shows which is the dot.
MARKS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 25),
    "white": (252, 252, 252),
    "gray": (125, 125, 125),
    "brown": (115, 65, 25),
}
# Chance accuracy of a uniform guess, per question template (used in every report).
CHANCE = {"mark": 1 / len(MARKS), "count": 0.25, "exists": 0.5}
_BACKGROUND = (235, 235, 228)
_SPLIT_OFFSET = {"train": 0, "validation": 1_000_003, "test": 2_000_006}
_DOT = 48  # px, the side of the dot


@dataclass
class ZoomVQASample:
    """One generated sample (see the module docstring for the fields)."""

    image: Image.Image
    question: str
    answer: str
    question_type: str
    template: str
    target_box: list[int]
    target_cell: list[int]
    target_color: str
    n_objects: int
    objects: list[dict[str, Any]]


def cell_box_1000(row: int, col: int, span: int = 1) -> list[int]:
    """The box of grid cells ``[row, row+span) x [col, col+span)`` in Qwen3-VL's 0..1000 frame."""
    step = 1000 // GRID
    return [col * step, row * step, (col + span) * step, (row + span) * step]


def make_sample(rng: random.Random, zoom_fraction: float = 0.6) -> ZoomVQASample:
    """Draw one image and one question from ``rng``."""
    n_objects = rng.randint(3, 6)
    cells = rng.sample(range(GRID * GRID), n_objects)
    names = rng.sample(sorted(COLORS), n_objects)
    image = Image.new("RGB", (CANVAS, CANVAS), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    objects = []
    for cell, name in zip(cells, names):
        row, col = divmod(cell, GRID)
        side = rng.randint(128, 168)
        x1 = col * CELL + rng.randint(4, CELL - side - 4)
        y1 = row * CELL + rng.randint(4, CELL - side - 4)
        box = [x1, y1, x1 + side, y1 + side]
        draw.rectangle([x1, y1, x1 + side - 1, y1 + side - 1], fill=COLORS[name])
        mark = rng.choice(sorted(MARKS))
        cx = x1 + side // 2 + rng.randint(-24, 24)
        cy = y1 + side // 2 + rng.randint(-24, 24)
        half = _DOT // 2
        draw.ellipse([cx - half, cy - half, cx + half - 1, cy + half - 1], fill=MARKS[mark])
        objects.append({"color": name, "mark": mark, "box": box, "cell": [row, col]})
    if rng.random() < zoom_fraction:
        target = rng.choice(objects)
        row, col = target["cell"]
        question = f"What colour is the dot on the square in row {row + 1}, column {col + 1}?"
        return ZoomVQASample(
            image, question, target["mark"], "zoom_needed", "mark",
            target["box"], target["cell"], target["color"], n_objects, objects,
        )  # fmt: skip
    if rng.random() < 0.5:
        question, answer, template = "How many squares are in the image?", str(n_objects), "count"
        color = ""
    else:
        present = rng.random() < 0.5
        pool = names if present else sorted(set(COLORS) - set(names))
        color = rng.choice(pool)
        question = f"Is there a {color} square in the image? Answer yes or no."
        answer, template = ("yes" if present else "no"), "exists"
    return ZoomVQASample(
        image, question, answer, "global", template, [], [], color, n_objects, objects
    )


def sample_stream(split: str, seed: int = 0) -> Iterator[ZoomVQASample]:
    """The endless, seeded sample stream of ``split``; a split of size n is its first n."""
    if split not in _SPLIT_OFFSET:
        raise ValueError(f"split must be one of {sorted(_SPLIT_OFFSET)}, got {split!r}")
    rng = random.Random(seed * 7_919 + _SPLIT_OFFSET[split])
    while True:
        yield make_sample(rng)


def _split_rows(n: int, seed: int, split: str, system_prompt: str | None) -> dict[str, list]:
    rows: dict[str, list] = {k: [] for k in _COLUMNS}
    for i, s in zip(range(n), sample_stream(split, seed)):
        prompt = [{"role": "system", "content": system_prompt}] if system_prompt else []
        prompt.append({"role": "user", "content": s.question})
        for key, value in (
            ("id", f"{split}-{i:05d}"),
            ("image", s.image),
            ("question", s.question),
            ("answer", s.answer),
            ("prompt", prompt),
            ("question_type", s.question_type),
            ("template", s.template),
            ("target_box", s.target_box),
            ("target_cell", s.target_cell),
            ("target_color", s.target_color),
            ("n_objects", s.n_objects),
        ):
            rows[key].append(value)
    return rows


_COLUMNS = (
    "id", "image", "question", "answer", "prompt", "question_type", "template",
    "target_box", "target_cell", "target_color", "n_objects",
)  # fmt: skip


def build_zoom_vqa(
    n_train: int = 2000,
    n_validation: int = 200,
    n_test: int = 200,
    seed: int = 0,
    system_prompt: str | None = "deepeyes",
):
    """Build the ZoomVQA ``datasets.DatasetDict`` (train / validation / test).

    Args:
        n_train, n_validation, n_test: samples per split (0 leaves the split out).
        seed: one seed for all splits; each split draws from its own stream, so growing
            one split never changes another.
        system_prompt: system turn of the ``prompt`` column: ``"deepeyes"`` (the default
            of ``load_deepeyes``), another text, or None for none.
    """
    from datasets import Dataset, DatasetDict, Features, Sequence, Value
    from datasets import Image as ImageFeature

    from hf_faithful.mcot.messages import DEEPEYES_SYSTEM_PROMPT

    for name, n in (("n_train", n_train), ("n_validation", n_validation), ("n_test", n_test)):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {n!r}")
    if system_prompt == "deepeyes":
        system_prompt = DEEPEYES_SYSTEM_PROMPT
    message = {"role": Value("string"), "content": Value("string")}
    features = Features(
        {
            "id": Value("string"),
            "image": ImageFeature(),
            "question": Value("string"),
            "answer": Value("string"),
            "prompt": [message],
            "question_type": Value("string"),
            "template": Value("string"),
            "target_box": Sequence(Value("int32")),
            "target_cell": Sequence(Value("int32")),
            "target_color": Value("string"),
            "n_objects": Value("int32"),
        }
    )
    splits = {}
    for split, n in (("train", n_train), ("validation", n_validation), ("test", n_test)):
        if n:
            rows = _split_rows(n, seed, split, system_prompt)
            splits[split] = Dataset.from_dict(rows, features=features)
    return DatasetDict(splits)


def export_questions(folder: str | os.PathLike, n: int = 64, split: str = "test", seed: int = 0):
    """Write the first ``n`` questions of ``split`` as ``questions.jsonl`` + ``images/*.png``,
    the question file format of ``hf-faithful faithfulness --data``; returns the JSONL path.

    Records carry ``question_type`` and ``target_box`` too, for per-type analyses."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, s in zip(range(n), sample_stream(split, seed)):
        name = f"images/{split}_{i:04d}.png"
        s.image.save(folder / name, optimize=True)
        record = {
            "id": f"{split}-{i:05d}",
            "image": name,
            "question": s.question,
            "reference": s.answer,
            "question_type": s.question_type,
            "target_box": s.target_box,
        }
        lines.append(json.dumps(record))
    path = folder / "questions.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path

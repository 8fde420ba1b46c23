"""A reference thinking-with-images VLM (a small Qwen3-VL on ZoomVQA): processor and loader.

``scripts/train_reference_vlm.py`` trains it from scratch and saves it (by default to
``REFERENCE_VLM_DIR``); :func:`load_reference_vlm` reads such a folder back. It is a real
``Qwen3VLForConditionalGeneration`` with a real Qwen3-VL processor and chat template, so
every code path is the one a 7B checkpoint takes; only the sizes are small.

The bundled model (``REFERENCE_VLM_DIR``, 6.8 MB) is the default subject of the
faithfulness CLI, the inspector Space and ``examples/train_sccm.py``. Its card records
what was measured on 300 ZoomVQA test questions: zoom-needed questions 1.000 with the
zoom tool, 0.238 from the whole image alone (chance 0.25).

Its image processor sees every image at most 128x128 pixels (16 vision tokens): that is
what makes ZoomVQA's dots invisible in the whole view and plain in a one-cell crop.
Boxes are in Qwen3-VL's 0..1000 frame (``BoxRules(coords="normalized_1000")``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from hf_faithful.assets import REFERENCE_VLM_DIR
from hf_faithful.models.vlm_processing import ImageOnlyQwen3VLProcessor

__all__ = [
    "DIRECT_SYSTEM_PROMPT",
    "REFERENCE_VLM_BOX_COORDS",
    "REFERENCE_VLM_DIR",
    "build_reference_vlm_processor",
    "load_reference_vlm",
]

REFERENCE_VLM_BOX_COORDS = "normalized_1000"
# The "without tools" condition: the model was trained to answer at once under this prompt.
DIRECT_SYSTEM_PROMPT = (
    "Answer the question directly from the image, without tools. "
    "Give the final answer inside <answer></answer>."
)
MAX_SIDE = 128  # pixels: the whole image and every crop are seen at most 128x128


def build_reference_vlm_processor(tokenizer: Any):
    """The reference VLM's processor: ``tokenizer`` + a Qwen3-VL image processor limited to
    ``MAX_SIDE`` x ``MAX_SIDE`` pixels, with TRL's Qwen3-VL template (it renders tool calls)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )
    from trl.chat_template_utils import qwen3_vl_chat_template

    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=32 * 32,
        max_pixels=MAX_SIDE * MAX_SIDE,
    )
    image_processor.size = {"shortest_edge": 32 * 32, "longest_edge": MAX_SIDE * MAX_SIDE}
    return ImageOnlyQwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=qwen3_vl_chat_template,
    )


def load_reference_vlm(
    path: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
):
    """Load a reference VLM saved by ``scripts/train_reference_vlm.py``: ``(model, processor)``
    (``path=None``: ``REFERENCE_VLM_DIR``, the script's default output)."""
    from transformers import Qwen3VLForConditionalGeneration

    folder = REFERENCE_VLM_DIR if path is None else Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"no model (config.json) in {folder}: train one with scripts/train_reference_vlm.py"
        )
    model = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=dtype)
    if device is not None:
        model.to(device)
    processor = ImageOnlyQwen3VLProcessor.from_pretrained(folder)
    processor.tokenizer.padding_side = "left"
    return model.eval(), processor

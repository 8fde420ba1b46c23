"""A ~90k-parameter Qwen2.5-VL / Qwen3-VL built from configs, fully offline.

Tests and demos of the faithfulness measurement and SCCM training need a real
vision-language model (real processor, real chat template with tool calls, real
``generate``) without downloading anything. The weights are random: the point is that
every code path a real Qwen-VL checkpoint takes is exercised, fast, on CPU. The
processors are the image-only ones of :mod:`hf_faithful.models.vlm_processing` (no
torchvision needed).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from trl.chat_template_utils import qwen2_5_vl_chat_template, qwen3_vl_chat_template

from hf_faithful.models.vlm_processing import (
    IMAGE_ONLY_PROCESSORS,
    byte_level_qwen_tokenizer,
    vision_token_ids,
)

FAMILIES = ("qwen2_5_vl", "qwen3_vl")

# Both families use TRL's Qwen3-VL template by default: it renders tool calls (the
# Qwen2.5-VL one cannot) and TRL recognizes it for response parsing.
CHAT_TEMPLATES = {"qwen3_vl": qwen3_vl_chat_template, "qwen2_5_vl": qwen2_5_vl_chat_template}


_PROCESSORS = {family: IMAGE_ONLY_PROCESSORS[family] for family in FAMILIES}
_MODELS = {
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen3_vl": Qwen3VLForConditionalGeneration,
}
_PATCH_SIZE = {"qwen2_5_vl": 14, "qwen3_vl": 16}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def build_tiny_tokenizer() -> Qwen2Tokenizer:
    """Byte-level Qwen2 tokenizer: the 256 byte symbols (no merges) plus Qwen's tokens."""
    return byte_level_qwen_tokenizer()


def build_tiny_processor(family: str = "qwen3_vl", chat_template: str | None = None):
    """Tokenizer + ``Qwen2VLImageProcessorPil`` sized for small images (few vision tokens).

    ``chat_template`` defaults to TRL's Qwen3-VL template for both families, because it
    renders tool calls; pass ``CHAT_TEMPLATES["qwen2_5_vl"]`` for the stock Qwen2.5-VL one.
    """
    _check_family(family)
    patch = _PATCH_SIZE[family]
    factor = patch * 2  # merge_size 2
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=factor * factor,
        max_pixels=(4 * factor) ** 2,  # at most 16 merged vision tokens per image
    )
    # Qwen2VLImageProcessorPil reads min/max pixels through `size`.
    image_processor.size = {"shortest_edge": factor * factor, "longest_edge": (4 * factor) ** 2}
    tokenizer = build_tiny_tokenizer()
    return _PROCESSORS[family](
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_template if chat_template is not None else qwen3_vl_chat_template,
    )


def _tiny_config(family: str, tokenizer: Qwen2Tokenizer):
    token_ids = vision_token_ids(tokenizer)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 2048,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
    }
    vision = {
        "depth": 2,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_heads": 2,
        "patch_size": _PATCH_SIZE[family],
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 32,
    }
    if family == "qwen3_vl":
        text |= {
            "head_dim": 16,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [4, 2, 2],
                "mrope_interleaved": True,
            },
        }
        vision |= {"num_position_embeddings": 64, "deepstack_visual_indexes": [1]}
        return Qwen3VLConfig(
            text_config=text, vision_config=vision, tie_word_embeddings=True, **token_ids
        )
    text |= {
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [4, 2, 2],
        }
    }
    vision |= {"window_size": 56, "fullatt_block_indexes": [1]}
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=True, **token_ids
    )


def build_tiny_vlm(
    family: str = "qwen3_vl", seed: int = 0, chat_template: str | None = None
) -> tuple[PreTrainedModel, Qwen2_5_VLProcessor | Qwen3VLProcessor]:
    """Build a random ~90k-parameter Qwen-VL model and its processor, offline.

    Args:
        family: ``"qwen3_vl"`` (patch 16, boxes normalized to 0..1000 in real checkpoints)
            or ``"qwen2_5_vl"`` (patch 14, absolute pixel boxes).
        seed: seed of the random weights (same seed, same weights).
        chat_template: override the chat template (see :func:`build_tiny_processor`).
    """
    _check_family(family)
    processor = build_tiny_processor(family, chat_template)
    config = _tiny_config(family, processor.tokenizer)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = _MODELS[family](config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model.eval(), processor


def save_tiny_vlm(
    path: str | os.PathLike,
    family: str = "qwen3_vl",
    seed: int = 0,
    chat_template: str | None = None,
) -> str:
    """Build the tiny VLM and save model + processor to ``path``; returns the path as str.

    GRPO with ``beta != 0`` re-loads its reference model from ``_name_or_path``, so
    trainers need a model that lives on disk. Reload with :func:`load_tiny_vlm`, or the
    model alone with ``AutoModelForImageTextToText.from_pretrained(path)``.
    """
    model, processor = build_tiny_vlm(family, seed, chat_template)
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    # Point the in-memory config at the folder too, as from_pretrained would.
    model.config._name_or_path = str(path)
    return str(path)


def load_tiny_vlm(
    path: str | os.PathLike,
) -> tuple[PreTrainedModel, Qwen2_5_VLProcessor | Qwen3VLProcessor]:
    """Reload what :func:`save_tiny_vlm` wrote (the family is read from the saved config)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    family = {"qwen3_vl": "qwen3_vl", "qwen2_5_vl": "qwen2_5_vl"}.get(config.model_type)
    if family is None:
        raise ValueError(
            f"path {str(path)!r} does not hold a tiny Qwen-VL (model_type={config.model_type!r})"
        )
    model = _MODELS[family].from_pretrained(path)
    processor = _PROCESSORS[family].from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    return model.eval(), processor


class ScriptedLogitsProcessor(LogitsProcessor):
    """Forces each row's continuation to the text ``script(prompt_text, row)`` returns.

    A random tiny model never calls a tool; tests and demos of multi-turn tool rollouts
    need it to, deterministically. The script sees the decoded prompt (special tokens kept)
    and the row's index in the ``generate`` batch; after the scripted text the row ends
    with EOS. The model still computes real log-probabilities of the forced tokens.
    """

    def __init__(self, tokenizer: Qwen2Tokenizer, script: Callable[[str, int], str]):
        self.tokenizer = tokenizer
        self.script = script
        self.start: int | None = None
        self.targets: list[list[int]] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
            pad = self.tokenizer.pad_token_id
            for row, ids in enumerate(input_ids.tolist()):
                prompt = self.tokenizer.decode([i for i in ids if i != pad])
                text = self.script(prompt, row)
                self.targets.append(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        step = input_ids.shape[1] - self.start
        forced = torch.full_like(scores, float("-inf"))
        for row, target in enumerate(self.targets):
            token = target[step] if step < len(target) else self.tokenizer.eos_token_id
            forced[row, token] = 0.0
        return forced


def script_generation(
    model: PreTrainedModel, tokenizer: Qwen2Tokenizer, script: Callable[[str, int], str]
) -> None:
    """Make ``model.generate`` follow ``script`` (see :class:`ScriptedLogitsProcessor`).

    Patches this model instance only; PEFT wrappers and TRL's unwrapping reach it too.
    """
    generate = model.generate

    @functools.wraps(generate)
    def scripted_generate(*args, **kwargs):
        processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        processors.append(ScriptedLogitsProcessor(tokenizer, script))
        return generate(*args, logits_processor=processors, **kwargs)

    model.generate = scripted_generate

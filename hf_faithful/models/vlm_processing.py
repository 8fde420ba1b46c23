"""Processors for Qwen-VL checkpoints on machines without torchvision.

The stock Qwen-VL processors insist on a video processor, and the only one transformers
ships needs torchvision (absent on CPU-only installs), so ``AutoProcessor`` can then only
build the tokenizer. The subclasses here drop ``video_processor`` from their attributes:
they build, save and reload with images and text only, for real checkpoints and for the
tiny test models alike.
"""

from __future__ import annotations

import os
from typing import Any

from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

__all__ = [
    "IMAGE_ONLY_PROCESSORS",
    "SPECIAL_TOKENS",
    "TAG_TOKENS",
    "ImageOnlyQwen2_5_VLProcessor",
    "ImageOnlyQwen3VLProcessor",
    "byte_level_qwen_tokenizer",
    "load_vlm_processor",
    "vision_token_ids",
]


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor without a video processor (images and text only)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    """Qwen3-VL processor without a video processor (images and text only)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


# model_type -> image-only processor class
IMAGE_ONLY_PROCESSORS: dict[str, type] = {
    "qwen2_5_vl": ImageOnlyQwen2_5_VLProcessor,
    "qwen3_vl": ImageOnlyQwen3VLProcessor,
}


def load_vlm_processor(
    name_or_path: str | os.PathLike, model_type: str | None = None, **kwargs: Any
) -> Any:
    """``AutoProcessor.from_pretrained``, falling back to the image-only processor of
    ``model_type`` when AutoProcessor could only build a tokenizer (no torchvision)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
    if hasattr(processor, "image_processor"):
        return processor
    if model_type not in IMAGE_ONLY_PROCESSORS:
        raise ValueError(
            f"could not load an image processor for {os.fspath(name_or_path)} ({model_type})"
        )
    return IMAGE_ONLY_PROCESSORS[model_type].from_pretrained(name_or_path, **kwargs)


def vision_token_ids(tokenizer: Any) -> dict[str, int]:
    """The image / video / vision-start / vision-end token ids a Qwen-VL config needs, read
    from ``tokenizer`` (for models built from a config with their own tokenizer)."""
    return {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }


SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Plain (non-special) added tokens, as in Qwen checkpoints: they survive
# ``skip_special_tokens=True`` so tool calls and answers stay parseable after decoding.
TAG_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
)


def byte_level_qwen_tokenizer() -> Any:
    """Byte-level Qwen2 tokenizer: the 256 byte symbols (no merges) plus Qwen's special tokens
    and tags, for Qwen-VL models built from a config (tiny test models, the reference VLM,
    whose BPE is trained from this one with ``train_new_from_iterator``)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {symbol: i for i, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.add_tokens(list(TAG_TOKENS))
    tokenizer.padding_side = "left"
    return tokenizer

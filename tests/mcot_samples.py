"""Shared sample data of the mcot tests: a DeepEyes rollout and a random image."""

import json

import numpy as np
from PIL import Image


def call_text(bbox, name="image_zoom_in_tool", label=None):
    arguments = {"bbox_2d": bbox} | ({"label": label} if label else {})
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def random_image() -> Image.Image:
    """The 320x240 random RGB image the traces are cropped from."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# A DeepEyes rollout as the environment leaves it: chat markup, vision tokens, two rounds.
DEEPEYES = (
    "<|im_start|>assistant\n<think>The sign is small; zoom into the upper left.</think>\n"
    + call_text([10, 20, 110, 120], label="sign")
    + "<|im_end|>\n<|im_start|>user\n<tool_response><|vision_start|><|image_pad|>"
    "<|image_pad|><|vision_end|></tool_response><|im_end|>\n<|im_start|>assistant\n"
    "<think>Now the lower right.</think>\n"
    + call_text([200, 100, 320, 240])
    + "<|im_end|>\n<|im_start|>user\n<tool_response><image></tool_response><|im_end|>\n"
    "<|im_start|>assistant\n<think>The sign says STOP.</think>\n<answer>STOP</answer><|im_end|>"
)

"""The tiny offline VLM: builds, chats with an image, renders tool calls, saves and reloads."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from hf_faithful.testing.tiny_vlm import build_tiny_vlm, load_tiny_vlm, save_tiny_vlm


def _chat(image: Image.Image, text: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": text}],
        }
    ]


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_generate_save_reload(family, tmp_path):
    model, processor = build_tiny_vlm(family, seed=3)
    n_params = sum(p.numel() for p in model.parameters())
    assert 30_000 < n_params < 200_000
    image = Image.new("RGB", (96, 64), (200, 30, 30))
    inputs = processor.apply_chat_template(
        [_chat(image, "What color is it?"), _chat(image.crop((0, 0, 40, 40)), "And here?")],
        tokenize=True,
        return_dict=True,
        add_generation_prompt=True,
        padding=True,
        return_tensors="pt",
    )
    # Each image became vision tokens matching its patch grid.
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    n_tokens = (inputs["input_ids"] == image_pad).sum().item()
    assert n_tokens == int(inputs["image_grid_thw"].prod(dim=1).sum().item()) // 4
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    assert out.shape[0] == 2 and prompt_len < out.shape[1] <= prompt_len + 6

    path = save_tiny_vlm(tmp_path / family, family=family, seed=3)
    reloaded, reprocessor = load_tiny_vlm(path)
    assert type(reprocessor) is type(processor)
    assert reprocessor.chat_template == processor.chat_template
    out2 = reloaded.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(out, out2)
    for (name, p), (_, q) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(p, q), name


def test_seed_changes_weights():
    a, _ = build_tiny_vlm(seed=0)
    b, _ = build_tiny_vlm(seed=0)
    c, _ = build_tiny_vlm(seed=1)
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_chat_template_renders_tool_calls_and_tokens_roundtrip():
    _, processor = build_tiny_vlm()
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Zoom please."}]},
        {
            "role": "assistant",
            "content": "<think>look left</think>",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {
                        "name": "image_zoom_in_tool",
                        "arguments": {"bbox_2d": [1, 2, 50, 60]},
                    },
                }
            ],
        },
        {"role": "tool", "name": "image_zoom_in_tool", "content": [{"type": "text", "text": "ok"}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert (
        '<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 50, 60]}}\n</tool_call>'
        in text
    )
    assert "<tool_response>" in text
    tokenizer = processor.tokenizer
    ids = tokenizer(text)["input_ids"]
    # Tags are single tokens, the byte-level vocabulary round-trips any text.
    assert tokenizer.convert_tokens_to_ids("<tool_call>") in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer("héllo wörld ✓")["input_ids"]) == "héllo wörld ✓"


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="family"):
        build_tiny_vlm("llava")

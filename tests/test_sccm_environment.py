"""The zoom-in environment TRL drives: crops, refusals, reset, tool schema; and DeepEyes data."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from PIL import Image
from transformers.utils import get_json_schema

from hf_faithful.mcot.zoom import BoxRules, InvalidBoxError
from hf_faithful.sccm.data import load_deepeyes
from hf_faithful.sccm.environment import ZoomInEnvironment


def _image(width: int = 200, height: int = 100) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    image.paste((255, 0, 0), (0, 0, 50, 50))  # red top-left square
    return image


def test_zoom_in_crops_the_original_image():
    env = ZoomInEnvironment()
    assert env.reset(image=_image(), question="q", answer="red") is None
    [part] = env.image_zoom_in_tool(bbox_2d=[0, 0, 50, 50], label="square")
    assert part["type"] == "image" and part["image"].size == (50, 50)
    assert part["image"].getpixel((25, 25)) == (255, 0, 0)
    # Clamped like DeepEyes: the box is cut to the image.
    [part] = env.image_zoom_in_tool([150, 40, 400, 400])
    assert part["image"].size == (50, 60)
    assert env.calls == 2 and env.failed_calls == 0 and len(env.boxes) == 2
    assert env.boxes[1].to_list() == [150, 40, 200, 100]


def test_normalized_coordinates():
    env = ZoomInEnvironment(BoxRules(coords="normalized_1000"))
    env.reset(image=_image(200, 100))
    [part] = env.image_zoom_in_tool([0, 0, 500, 500])
    assert part["image"].size == (100, 50)
    assert env.boxes[0].area == 5000


@pytest.mark.parametrize(
    "bbox, message",
    [
        ([10, 10, 20, 20], "too small"),
        ([60, 60, 10, 10], "inverted"),
        ([0, 0, "x", 40], "not a number"),
        ([0, 0, 40], "4 numbers"),
        ("0,0,40,40", "list of 4 numbers"),
        ([0, 0, float("nan"), 40], "not finite"),
        ([500, 500, 900, 900], "outside"),
        (None, "missing argument bbox_2d"),
    ],
)
def test_refused_boxes_raise_and_are_counted(bbox, message):
    env = ZoomInEnvironment()
    env.reset(image=_image())
    with pytest.raises(InvalidBoxError, match=message):
        env.image_zoom_in_tool(bbox_2d=bbox)
    assert env.calls == 1 and env.failed_calls == 1 and env.boxes == [] and env.crops == []
    assert message in env.errors[0]


def test_reset_clears_state_and_reads_image_forms(tmp_path):
    env = ZoomInEnvironment()
    env.reset(image=_image(), answer="red")
    env.image_zoom_in_tool([0, 0, 50, 50])
    env.sufficient = True
    buffer = io.BytesIO()
    _image(80, 60).convert("L").save(buffer, format="PNG")
    env.reset(images=[{"bytes": buffer.getvalue(), "path": None}], answer="")
    assert env.boxes == [] and env.crops == [] and env.calls == 0 and env.sufficient is None
    assert env.image.size == (80, 60) and env.image.mode == "RGB"
    assert env.reference is None  # empty answer = no reference
    path = tmp_path / "img.png"
    _image(30, 40).save(path)
    env.reset(image=str(path))
    assert env.image_size == (30, 40)
    with pytest.raises(ValueError, match="needs an image"):
        env.reset(question="no image")
    with pytest.raises(TypeError, match="column 'image'"):
        env.reset(image=123)


def test_only_the_tool_is_public_and_its_schema_is_valid():
    public = [
        n
        for n in dir(ZoomInEnvironment)
        if not n.startswith("_") and callable(getattr(ZoomInEnvironment, n))
    ]
    assert sorted(public) == ["image_zoom_in_tool", "reset"]
    schema = get_json_schema(ZoomInEnvironment().image_zoom_in_tool)
    function = schema["function"]
    assert function["name"] == "image_zoom_in_tool"
    assert function["parameters"]["properties"]["bbox_2d"]["type"] == "array"
    assert "0-1000" in function["parameters"]["properties"]["bbox_2d"]["description"]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_load_deepeyes_simple_and_released_layouts(tmp_path):
    simple = tmp_path / "simple.parquet"
    pd.DataFrame(
        {
            "image": [{"bytes": _png(_image()), "path": None}],
            "question": ["<image>\nWhat color is the square?"],
            "answer": ["red"],
        }
    ).to_parquet(simple)
    released = tmp_path / "deepeyes.parquet"
    pd.DataFrame(
        {
            "images": [[{"bytes": _png(_image(64, 32)), "path": None}]],
            "prompt": [[{"role": "user", "content": "<image>\nIgnored when extra_info has it"}]],
            "reward_model": [{"ground_truth": "B", "style": "model"}],
            "extra_info": [{"question": "Which option?", "answer": "B"}],
        }
    ).to_parquet(released)
    for path, size, question, answer in [
        (simple, (200, 100), "What color is the square?", "red"),
        (released, (64, 32), "Which option?", "B"),
    ]:
        rows = load_deepeyes(path)
        row = rows[0]
        assert sorted(rows.column_names) == ["answer", "image", "prompt", "question"]
        assert row["image"].size == size
        assert row["question"] == question and row["answer"] == answer
        assert (
            row["prompt"][0]["role"] == "system"
            and "image_zoom_in_tool" in row["prompt"][0]["content"]
        )
        assert row["prompt"][-1] == {"role": "user", "content": question}
    saved = tmp_path / "saved"
    load_deepeyes(simple, system_prompt=None).save_to_disk(saved)
    again = load_deepeyes(saved, system_prompt=None)
    assert again[0]["prompt"] == [{"role": "user", "content": "What color is the square?"}]


def test_load_deepeyes_errors(tmp_path):
    with pytest.raises(ValueError, match="parquet"):
        load_deepeyes(tmp_path / "data.csv")
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"answer": ["x"], "question": ["q"]}).to_parquet(bad)
    with pytest.raises(ValueError, match="no image"):
        load_deepeyes(bad)

"""The zoom-in environment TRL drives: crops, refusals, reset, tool schema; and DeepEyes data."""

from __future__ import annotations

import inspect
import io
import json

import pandas as pd
import pytest
from PIL import Image
from transformers.utils import get_json_schema

from hf_faithful.mcot.zoom import BoxRules, InvalidBoxError
from hf_faithful.sccm.data import DEEPEYES_SYSTEM_PROMPT, load_deepeyes, with_prompt_column
from hf_faithful.sccm.environment import ZoomInEnvironment, forget_unseen_crops
from hf_faithful.testing.tiny_vlm import build_tiny_processor


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
    # TRL finds tools as functions on the class, then reads them from the instance.
    tools = dict(inspect.getmembers(ZoomInEnvironment, predicate=inspect.isfunction))
    assert "image_zoom_in_tool" in tools
    for coords in ("absolute", "normalized_1000"):
        schema = get_json_schema(ZoomInEnvironment(BoxRules(coords=coords)).image_zoom_in_tool)
        function = schema["function"]
        assert function["name"] == "image_zoom_in_tool"
        assert function["parameters"]["properties"]["bbox_2d"]["type"] == "array"
        assert function["parameters"]["required"] == ["bbox_2d"]  # as in DeepEyes


@pytest.mark.parametrize(
    "family, rules, says, never",
    [
        ("qwen3_vl", BoxRules(coords="normalized_1000"), "normalized to 0-1000", "pixel"),
        ("qwen2_5_vl", BoxRules(coords="absolute"), "absolute pixel", "0-1000"),
        ("qwen2_5_vl", None, "absolute pixel", "0-1000"),  # the default rules
    ],
)
def test_the_model_is_shown_one_coordinate_convention(family, rules, says, never):
    """What the chat template renders for the tool names the convention its rules read, only."""
    env = ZoomInEnvironment(rules)
    processor = build_tiny_processor(family)
    text = processor.apply_chat_template(
        [{"role": "user", "content": "zoom"}], tools=[env.image_zoom_in_tool], tokenize=False
    )
    tools = json.loads(text.split("<tools>\n")[1].split("\n</tools>")[0])
    bbox = tools["function"]["parameters"]["properties"]["bbox_2d"]
    assert says in bbox["description"] and never not in bbox["description"]
    assert tools["function"]["parameters"]["required"] == ["bbox_2d"]
    # Changing the rules changes the description with them.
    other = "normalized_1000" if env.rules.coords == "absolute" else "absolute"
    env.rules = BoxRules(coords=other)
    assert not env.has_default_rules
    schema = get_json_schema(env.image_zoom_in_tool)["function"]["parameters"]
    assert says not in schema["properties"]["bbox_2d"]["description"]


def test_forget_unseen_crops_keeps_the_crops_in_the_completion():
    env = ZoomInEnvironment()
    env.reset(image=_image())
    first = env.image_zoom_in_tool([0, 0, 50, 50])
    env.image_zoom_in_tool([0, 0, 100, 100])
    completion = [
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function"}]},
        {"role": "tool", "name": "image_zoom_in_tool", "content": first},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function"}]},
    ]
    forget_unseen_crops(env, completion)
    forget_unseen_crops(env, completion)  # idempotent
    assert [b.to_list() for b in env.boxes] == [[0, 0, 50, 50]] and env.unseen_crops == 1
    # A same-sized copy is not the crop the tool returned: only identity counts.
    env.reset(image=_image())
    [part] = env.image_zoom_in_tool([0, 0, 50, 50])
    copy = [{"type": "image", "image": part["image"].copy()}]
    forget_unseen_crops(env, [{"role": "tool", "name": "image_zoom_in_tool", "content": copy}])
    assert env.crops == [] and env.unseen_crops == 1
    env.reset(image=_image())
    env.image_zoom_in_tool([0, 0, 50, 50])
    forget_unseen_crops(env, None)  # not a message list: nothing to check against
    assert len(env.crops) == 1 and env.unseen_crops == 0


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


def test_with_prompt_column_builds_the_deepeyes_prompt():
    from datasets import Dataset

    plain = Dataset.from_dict(
        {"image": [_image()], "question": ["<image>\nWhat color?"], "answer": ["red"]}
    )
    rows = with_prompt_column(plain)
    assert rows[0]["prompt"] == load_deepeyes(plain)[0]["prompt"]
    assert rows[0]["prompt"][0] == {"role": "system", "content": DEEPEYES_SYSTEM_PROMPT}
    assert rows[0]["prompt"][-1] == {"role": "user", "content": "What color?"}
    assert with_prompt_column(rows) is rows  # a prompt column is left alone
    evals = with_prompt_column({"a": plain}, name="eval_dataset")
    assert evals["a"][0]["prompt"] == rows[0]["prompt"]
    asked = with_prompt_column(
        plain.rename_column("question", "query"), "query", system_prompt=None
    )
    assert asked[0]["prompt"] == [{"role": "user", "content": "What color?"}]
    with pytest.raises(ValueError, match=r"'prompt' column, or a 'question' column.*'answer'"):
        with_prompt_column(plain.remove_columns("question"))
    with pytest.raises(ValueError, match=r"eval_dataset\['a'\]"):
        with_prompt_column({"a": plain.remove_columns("question")}, name="eval_dataset")

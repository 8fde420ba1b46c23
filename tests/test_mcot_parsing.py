"""Trace parsers (DeepEyes text, TRL messages, JSON/JSONL files), rendering, round trips."""

import json

import numpy as np
import pytest
from PIL import Image

from hf_faithful.mcot.trace import (
    crops_only_messages,
    load_traces,
    parse_deepeyes,
    parse_messages,
    parse_tool_call,
    save_traces,
    trace_from_record,
)
from hf_faithful.mcot.zoom import Box, BoxRules, zoom_in


def _call(bbox, name="image_zoom_in_tool", label=None):
    arguments = {"bbox_2d": bbox} | ({"label": label} if label else {})
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


@pytest.fixture
def image():
    pixels = np.random.default_rng(0).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# A DeepEyes rollout as the environment leaves it: chat markup, vision tokens, two rounds.
DEEPEYES = (
    "<|im_start|>assistant\n<think>The sign is small; zoom into the upper left.</think>\n"
    + _call([10, 20, 110, 120], label="sign")
    + "<|im_end|>\n<|im_start|>user\n<tool_response><|vision_start|><|image_pad|>"
    "<|image_pad|><|vision_end|></tool_response><|im_end|>\n<|im_start|>assistant\n"
    "<think>Now the lower right.</think>\n"
    + _call([200, 100, 320, 240])
    + "<|im_end|>\n<|im_start|>user\n<tool_response><image></tool_response><|im_end|>\n"
    "<|im_start|>assistant\n<think>The sign says STOP.</think>\n<answer>STOP</answer><|im_end|>"
)


def test_deepeyes_trace_is_parsed_in_order_with_recomputed_crops(image):
    trace = parse_deepeyes(DEEPEYES, image, "What does the sign say?", reference="stop", id="7")
    assert trace.valid, trace.errors
    assert [s.kind for s in trace.steps] == ["text", "zoom", "text", "zoom", "text"]
    assert trace.steps[0].text == "The sign is small; zoom into the upper left."
    assert trace.steps[1].label == "sign" and trace.steps[1].bbox == [10, 20, 110, 120]
    assert trace.boxes == [Box(10, 20, 110, 120), Box(200, 100, 320, 240)]
    assert trace.answer == "STOP" and trace.reference == "stop" and trace.id == "7"
    expected = zoom_in(image, [200, 100, 320, 240])
    np.testing.assert_array_equal(np.asarray(trace.crops[1]), np.asarray(expected))
    assert "Now the lower right." in trace.reasoning


def test_supplied_crops_are_used_in_order(image):
    crops = [Image.new("RGB", (100, 100), "red"), Image.new("RGB", (120, 140), "blue")]
    trace = parse_deepeyes(DEEPEYES, image, "q", crops=crops)
    assert trace.crops == crops


def test_normalized_coordinates_for_qwen3_vl(image):
    text = "<think>t</think>" + _call([0, 0, 500, 500]) + "<answer>a</answer>"
    trace = parse_deepeyes(text, image, "q", rules=BoxRules(coords="normalized_1000"))
    assert trace.boxes == [Box(0, 0, 160, 120)]  # half of 320x240
    assert trace.crops[0].size == (160, 120)


@pytest.mark.parametrize(
    ("completion", "error"),
    [
        ("<think>t</think><tool_call>{bad json</tool_call><answer>a</answer>", "not valid JSON"),
        ("<think>t</think>" + _call([400, 300, 500, 400]) + "<answer>a</answer>", "outside"),
        ("<think>t</think>" + _call([100, 100, 50, 150]) + "<answer>a</answer>", "inverted"),
        ("<think>t</think>" + _call([50, 50, 50, 150]) + "<answer>a</answer>", "zero area"),
        (
            '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0, 0, NaN, 90]}}</tool_call><answer>a</answer>',
            "not finite",
        ),
        ("<think>t</think>" + _call([0, 0, 20, 20]) + "<answer>a</answer>", "too small"),
        (
            "<think>t</think>" + _call([0, 0, 90, 90], name="crop") + "<answer>a</answer>",
            "unknown tool",
        ),
        (
            '<tool_call>{"name": "image_zoom_in_tool", "arguments": {}}</tool_call><answer>a</answer>',
            "no 'bbox_2d'",
        ),
        ("<think>I think it is red.</think>", "missing final answer"),
        ("<think>t</think><answer></answer>", "empty final answer"),
        ("<think>unclosed <answer>red", "unclosed or stray tag"),
    ],
)
def test_malformed_traces_are_flagged_not_raised(image, completion, error):
    trace = parse_deepeyes(completion, image, "q")
    assert not trace.valid
    assert any(error in e for e in trace.errors), trace.errors


def test_more_tool_calls_than_allowed(image):
    text = "".join(_call([0, 0, 90, 90]) for _ in range(3)) + "<answer>a</answer>"
    assert parse_deepeyes(text, image, "q", max_tool_calls=3).valid
    trace = parse_deepeyes(text, image, "q", max_tool_calls=2)
    assert trace.errors == ["3 tool calls, more than max_tool_calls=2"]


def test_trl_conversation_with_tool_calls_and_tool_images(image):
    crop = Image.new("RGB", (90, 60), "green")
    messages = [
        {"role": "system", "content": "You can zoom."},
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": "Color?"}],
        },
        {
            "role": "assistant",
            "content": "<think>zoom</think>",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {
                        "name": "image_zoom_in_tool",
                        "arguments": '{"bbox_2d": [0, 0, 90, 60]}',
                    },
                }
            ],
        },
        {
            "role": "tool",
            "name": "image_zoom_in_tool",
            "content": [{"type": "image", "image": crop}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "<think>green</think><answer>green</answer>"}],
        },
    ]
    trace = parse_messages(messages)
    assert trace.valid, trace.errors
    assert trace.question == "Color?" and trace.image is image
    assert [s.kind for s in trace.steps] == ["text", "zoom", "text"]
    assert trace.crops == [crop] and trace.boxes == [Box(0, 0, 90, 60)]
    assert trace.answer == "green"


def test_rendering_round_trips_through_the_parser(image):
    trace = parse_deepeyes(DEEPEYES, image, "What does the sign say?")
    messages = trace.to_messages(system_prompt="sys")
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    images = [p["image"] for m in messages for p in m["content"] if p["type"] == "image"]
    assert images == [image, *trace.crops]
    again = parse_messages(messages)
    assert again.valid and again.answer == "STOP"
    assert [s.text for s in again.steps] == [s.text for s in trace.steps]
    assert again.boxes == trace.boxes
    assert parse_deepeyes(trace.to_text(), image, "q").boxes == trace.boxes


def test_prefix_for_answer_regeneration(image):
    trace = parse_deepeyes(DEEPEYES, image, "q")
    messages = trace.to_messages(include_answer=False, prefill_answer=True)
    last = messages[-1]
    assert last["role"] == "assistant"
    assert last["content"][0]["text"] == "<think>The sign says STOP.</think>\n<answer>"
    assert "STOP</answer>" not in json.dumps([m["content"][0].get("text", "") for m in messages])


def test_crops_only_messages_hold_no_full_image_and_no_reasoning(image):
    crop = zoom_in(image, [0, 0, 90, 90])
    messages = crops_only_messages("Color?", [crop])
    assert len(messages) == 1 and messages[0]["content"][0]["image"] is crop
    assert messages[0]["content"][-1]["text"].startswith("Color?")


def test_parse_tool_call_formats():
    assert parse_tool_call(
        '{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 3, 4], "label": "x"}}'
    ) == ([1, 2, 3, 4], "x")
    openai = {
        "type": "function",
        "function": {"name": "image_zoom_in_tool", "arguments": '{"bbox_2d": [1, 2, 3, 4]}'},
    }
    assert parse_tool_call(openai) == ([1, 2, 3, 4], None)
    with pytest.raises(ValueError, match="arguments are not valid JSON"):
        parse_tool_call({"name": "image_zoom_in_tool", "arguments": "{oops"})


def test_jsonl_file_every_bad_line_reported(tmp_path, image):
    image.save(tmp_path / "img.png")
    good = {"id": "a", "image": "img.png", "question": "q", "answer": "STOP", "response": DEEPEYES}
    lines = [
        json.dumps(good),
        "{not json",
        "",  # blank lines are skipped, numbering follows the file
        json.dumps(
            {"id": "b", "image": "missing.png", "question": "q", "response": "<answer>x</answer>"}
        ),
        json.dumps({"id": "c", "image": "img.png", "question": "q"}),
        json.dumps(
            {
                "id": "d",
                "image": "img.png",
                "question": "q",
                "steps": [{"type": "zoom", "bbox_2d": [5, 5, 1, 1]}],
                "answer": "x",
            }
        ),
        json.dumps([1, 2]),
        json.dumps({"id": "e", "image": "img.png", "response": "<answer>x</answer>"}),
    ]
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(lines) + "\n")
    traces = load_traces(path, rules=BoxRules(), max_tool_calls=4)
    assert [t.source for t in traces] == [f"traces.jsonl:{n}" for n in (1, 2, 4, 5, 6, 7, 8)]
    assert traces[0].valid and traces[0].reference == "STOP"  # 'answer' is the reference here
    assert "invalid JSON" in traces[1].errors[0]
    assert any("image file not found" in e for e in traces[2].errors)
    assert "no trace" in traces[3].errors[0]
    assert any("inverted" in e for e in traces[4].errors)
    assert "must be a JSON object" in traces[5].errors[0]
    assert traces[6].errors == ["missing question"]


def test_json_list_file_and_save_round_trip(tmp_path, image):
    trace = parse_deepeyes(DEEPEYES, image, "What does the sign say?", reference="stop", id="x/1")
    save_traces([trace], tmp_path / "out.jsonl")
    (back,) = load_traces(tmp_path / "out.jsonl")
    assert back.valid, back.errors
    assert back.id == "x/1" and back.answer == "STOP" and back.reference == "stop"
    assert back.boxes == trace.boxes
    np.testing.assert_array_equal(np.asarray(back.image), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(back.crops[0]), np.asarray(trace.crops[0]))
    # the same record in a .json list, with the image embedded as a data URI
    (tmp_path / "out.json").write_text(json.dumps({"traces": [trace.to_dict()]}))
    (again,) = load_traces(tmp_path / "out.json")
    assert again.valid and again.source == "out.json[0]" and again.boxes == trace.boxes


def test_record_with_datasets_image_dict(image, tmp_path):
    image.save(tmp_path / "i.png")
    record = {
        "question": "q",
        "images": [{"bytes": None, "path": str(tmp_path / "i.png")}],
        "response": "<answer>a</answer>",
    }
    trace = trace_from_record(record)
    assert trace.valid and trace.image.size == (320, 240)

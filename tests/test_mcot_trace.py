"""The Trace data model: rendering to chat messages, the regeneration prefix."""

import json

import pytest
from mcot_samples import DEEPEYES, random_image

from hf_faithful.mcot.parsing import parse_deepeyes, parse_messages


@pytest.fixture
def image():
    return random_image()


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


def test_prefix_for_answer_regeneration(image):
    trace = parse_deepeyes(DEEPEYES, image, "q")
    messages = trace.to_messages(include_answer=False, prefill_answer=True)
    last = messages[-1]
    assert last["role"] == "assistant"
    assert last["content"][0]["text"] == "<think>The sign says STOP.</think>\n<answer>"
    assert "STOP</answer>" not in json.dumps([m["content"][0].get("text", "") for m in messages])


def test_refused_zoom_renders_the_tool_error(image):
    trace = parse_deepeyes(
        '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [5, 5, 1, 1]}}'
        "</tool_call><answer>x</answer>",
        image,
        "q",
    )
    response = trace.to_messages()[2]
    assert response["role"] == "user"
    assert response["content"][0]["text"].startswith("<tool_response>Error: box is inverted")


def test_prefix_up_to_the_last_crop_and_tool_wording(image):
    trace = parse_deepeyes(DEEPEYES, image, "q")
    messages = trace.to_messages(
        include_answer=False,
        until_last_crop=True,
        tool_response="<tool_response>{image} Think again.</tool_response>",
    )
    # the reasoning after the last crop ("The sign says STOP.") and the answer are left out
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert "STOP" not in json.dumps([p.get("text", "") for m in messages for p in m["content"]])
    last = messages[-1]["content"]
    assert last[1]["image"] is trace.crops[1]
    assert last[2]["text"] == " Think again.</tool_response>"
    # a trace without crops renders as usual
    no_crop = parse_deepeyes("<think>It is red.</think><answer>red</answer>", image, "q")
    assert no_crop.to_messages(include_answer=False, until_last_crop=True)[-1]["role"] == (
        "assistant"
    )
    # a refused call answers with the error wording
    refused = parse_deepeyes(
        '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [5, 5, 1, 1]}}'
        "</tool_call><answer>x</answer>",
        image,
        "q",
    )
    response = refused.to_messages(tool_error="Error: {error}")[2]
    assert response["content"][0]["text"].startswith("Error: box is inverted")

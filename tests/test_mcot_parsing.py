"""Trace parsers: DeepEyes text, TRL messages and JSON records -> Trace."""

import numpy as np
import pytest
from mcot_samples import DEEPEYES, random_image
from mcot_samples import call_text as _call
from PIL import Image

from hf_faithful.mcot.parsing import (
    is_trace_record,
    parse_deepeyes,
    parse_messages,
    trace_from_record,
)
from hf_faithful.mcot.zoom import Box, BoxRules, zoom_in


@pytest.fixture
def image():
    return random_image()


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
        ("<think>I think it is red.</think>", "missing final answer"),
        ("<think>t</think><answer></answer>", "empty final answer"),
        ("<think>unclosed <answer>red", "unclosed or stray tag"),
    ],
)
def test_malformed_traces_are_flagged_not_raised(image, completion, error):
    trace = parse_deepeyes(completion, image, "q")
    assert not trace.valid
    assert any(error in e for e in trace.errors), trace.errors


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
    ],
)
def test_a_refused_call_keeps_the_trace_when_the_model_answers(image, completion, error):
    # DeepEyes answers a refused call with "Error: ..." and the model goes on; the trace
    # used to be dropped for it (issue 12). It is kept, the refusal on its step.
    trace = parse_deepeyes(completion, image, "q")
    assert trace.valid and trace.answer == "a", trace.errors
    (refused,) = trace.refused_calls
    assert refused.startswith("tool call 1: ") and error in refused
    (step,) = trace.zoom_steps
    assert step.crop is None and error in step.error


def test_a_refused_call_then_a_good_one(image):
    text = (
        _call([5, 5, 1, 1]) + "<think>oops</think>" + _call([0, 0, 90, 90]) + "<answer>a</answer>"
    )
    trace = parse_deepeyes(text, image, "q")
    assert trace.valid and len(trace.crops) == 1
    assert trace.refused_calls == [
        "tool call 1: box is inverted (needs x1 < x2 and y1 < y2): [5.0, 5.0, 1.0, 1.0]"
    ]


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


def test_record_with_datasets_image_dict(image, tmp_path):
    image.save(tmp_path / "i.png")
    record = {
        "question": "q",
        "images": [{"bytes": None, "path": str(tmp_path / "i.png")}],
        "response": "<answer>a</answer>",
    }
    trace = trace_from_record(record)
    assert trace.valid and trace.image.size == (320, 240)


def test_trace_records_are_told_from_question_records():
    assert is_trace_record({"question": "q", "image": "i.png", "response": "<answer>a</answer>"})
    assert is_trace_record({"steps": []}) and is_trace_record([1, 2])
    assert not is_trace_record({"question": "q", "image": "i.png", "answer": "a"})


def test_first_of_several_answers_is_the_trace_answer(image):
    # DeepEyes' rollouts stop at the first </answer>: the first answer is the model's
    text = "<think>t</think><answer>red</answer><think>or</think><answer>blue</answer>"
    with pytest.warns(UserWarning, match="x.jsonl:3: 2 <answer> tags; the first"):
        trace = parse_deepeyes(text, image, "q", source="x.jsonl:3")
    assert trace.answer == "red" and trace.valid, trace.errors
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, "Color?"]},
        {"role": "assistant", "content": "<answer>green</answer>"},
        {"role": "assistant", "content": "<answer>grey</answer>"},
    ]
    with pytest.warns(UserWarning, match="2 <answer> tags"):
        assert parse_messages(messages).answer == "green"


def test_too_large_image_is_an_error_of_the_record(image, tmp_path):
    image.save(tmp_path / "i.png")  # 320 x 240 = 76,800 pixels
    record = {"question": "q", "image": "i.png", "response": "<answer>a</answer>"}
    trace = trace_from_record(record, base_dir=tmp_path, max_image_pixels=50_000)
    assert trace.image is None and not trace.valid
    assert any("more than max_image_pixels=50,000" in e for e in trace.errors), trace.errors
    crops = {**record, "crops": ["i.png"]}
    trace = trace_from_record(crops, base_dir=tmp_path, max_image_pixels=50_000)
    assert any(e.startswith("crop: image is 320x240") for e in trace.errors), trace.errors
    messages = {
        "messages": [
            {"role": "user", "content": [{"type": "image", "image": "i.png"}, "q"]},
            {"role": "assistant", "content": "<answer>a</answer>"},
        ]
    }
    trace = trace_from_record(messages, base_dir=tmp_path, max_image_pixels=50_000)
    assert any("cannot read image: image is 320x240" in e for e in trace.errors), trace.errors
    assert trace_from_record(record, base_dir=tmp_path, max_image_pixels=76_800).valid


def test_judge_label_of_a_record_is_kept_for_judge_validation(image):
    from hf_faithful.mcot.images import png_data_uri

    record = {"image": png_data_uri(image), "question": "q", "response": "<answer>a</answer>"}
    assert trace_from_record(record | {"judge_label": "Yes"}).metadata["judge_label"] is True
    assert trace_from_record(record | {"judge_label": 0}).metadata["judge_label"] is False
    assert "judge_label" not in trace_from_record(record).metadata
    bad = trace_from_record(record | {"judge_label": "maybe"})
    assert bad.errors == ["judge_label must be true/false (yes/no, 1/0), got 'maybe'"]

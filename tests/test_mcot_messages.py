"""The chat side of the protocol: tool calls and responses, the sufficiency query, the
answer in a reply."""

import pytest
from mcot_samples import random_image
from PIL import Image

from hf_faithful.mcot.messages import (
    answer_from_reply,
    content_text,
    final_answer,
    parse_tool_call,
    sufficiency_query,
    tool_call_text,
    tool_response_content,
)
from hf_faithful.mcot.zoom import zoom_in


@pytest.fixture
def image():
    return random_image()


def test_sufficiency_query_holds_no_full_image_and_no_reasoning(image):
    crop = zoom_in(image, [0, 0, 90, 90])
    messages = sufficiency_query([crop], "Color?", "{question}\nAnswer from the crops.")
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
    text = tool_call_text([1, 2, 3, 4], "x")
    assert parse_tool_call(text.removeprefix("<tool_call>").removesuffix("</tool_call>")) == (
        [1, 2, 3, 4],
        "x",
    )


def test_tool_response_content():
    crop = Image.new("RGB", (4, 4))
    assert [p["type"] for p in tool_response_content(crop)] == ["text", "image", "text"]
    (error,) = tool_response_content("box is inverted")
    assert error["text"] == "<tool_response>Error: box is inverted</tool_response>"


def test_answer_from_reply():
    assert answer_from_reply("red</answer>", prefilled=True) == "red"
    assert answer_from_reply("<think>x</think><answer>blue</answer>", prefilled=True) == "blue"
    assert answer_from_reply("green\nmore", prefilled=False) == "green"
    assert answer_from_reply("") is None and answer_from_reply(None) is None
    assert answer_from_reply("The answer is \\boxed{7}.") == "7"


def test_answer_from_reply_takes_the_first_answer():
    # a prefilled continuation that goes on after its </answer>: the first answer counts
    with pytest.warns(UserWarning, match="2 <answer> tags"):
        assert answer_from_reply("B</answer> or <answer>C</answer>", prefilled=True) == "B"
    with pytest.warns(UserWarning, match="2 <answer> tags"):
        assert answer_from_reply("<answer>B</answer><answer>C</answer>") == "B"
    with pytest.warns(UserWarning, match="2 <answer> tags"):
        assert (
            final_answer([{"role": "assistant", "content": "<answer>1</answer><answer>2</answer>"}])
            == "1"
        )


def test_content_text_and_final_answer():
    parts = [{"type": "image", "image": None}, {"type": "text", "text": "a"}, "b"]
    assert content_text(parts) == "ab" and content_text("s") == "s" and content_text(None) == ""
    completion = [
        {"role": "assistant", "content": "<answer>first</answer>"},
        {"role": "tool", "content": [{"type": "image", "image": None}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<answer> 42 </answer>"}]},
    ]
    assert final_answer(completion) == "42"
    assert final_answer([{"role": "user", "content": "q"}]) is None


def test_tool_response_wording_is_a_template():
    from hf_faithful.mcot.messages import check_tool_templates

    crop = Image.new("RGB", (4, 4))
    parts = tool_response_content(crop, "<tool_response>{image}\nThink again.</tool_response>")
    assert [p["type"] for p in parts] == ["text", "image", "text"]
    assert parts[0]["text"] == "<tool_response>" and parts[1]["image"] is crop
    assert parts[2]["text"] == "\nThink again.</tool_response>"
    assert [p["type"] for p in tool_response_content(crop, "{image}")] == ["image"]
    error = tool_response_content("box is inverted", error_template="Error: {error} {json}")
    assert error == [{"type": "text", "text": "Error: box is inverted {json}"}]
    with pytest.raises(ValueError, match="tool_response must contain"):
        check_tool_templates("<tool_response></tool_response>", "{error}")
    with pytest.raises(ValueError, match="tool_error must contain"):
        check_tool_templates("{image}", "Error")

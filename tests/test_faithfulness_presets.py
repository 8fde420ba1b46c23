"""Presets: DeepEyes' own prompt format and tool rules, copied from its repository."""

import pytest

from hf_faithful.faithfulness.presets import (
    DEEPEYES_USER_SUFFIX,
    PRESETS,
    preset_config,
    preset_fields,
)
from hf_faithful.mcot.zoom import BoxRules


def test_deepeyes_preset_is_deepeyes_eval_format():
    config = preset_config("deepeyes")
    # USER_PROMPT_V2 of eval/eval_vstar.py, to the character
    assert DEEPEYES_USER_SUFFIX == (
        "\nThink first, call **image_zoom_in_tool** if needed, then answer. Format strictly "
        "as:  <think>...</think>  <tool_call>...</tool_call> (if tools needed)  "
        "<answer>...</answer> "
    )
    assert config.user_template.format(question="Q?") == "Q?" + DEEPEYES_USER_SUFFIX
    assert (
        config.tool_response == "<tool_response>{image}" + DEEPEYES_USER_SUFFIX + "</tool_response>"
    )
    assert config.tool_error == "Error: {error}" and config.max_turn_tokens == 10240
    system = config.resolved_system_prompt
    assert "<tools>" in system and system.endswith("</tool_call>")
    assert "**Example**:  \n<tool_call>  \n" in system  # trailing spaces kept
    assert config.box_rules == BoxRules(
        coords="absolute", min_side=0, enlarge_below=28, crop_resize="smart_resize"
    )


def test_overrides_win_and_unknown_presets_are_refused():
    config = preset_config("deepeyes", max_turn_tokens=512, box_rules={"coords": "normalized_1000"})
    assert config.max_turn_tokens == 512 and config.box_rules.coords == "normalized_1000"
    assert config.box_rules.enlarge_below == 28  # the rest of the preset's rules stay
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_config("llava")
    flat = preset_fields("deepeyes")
    assert flat["enlarge_below"] == 28 and flat["system_prompt"] == "deepeyes"
    PRESETS["broken"] = {"no_such_field": 1}
    try:
        with pytest.raises(ValueError, match="unknown fields"):
            preset_fields("broken")
    finally:
        del PRESETS["broken"]

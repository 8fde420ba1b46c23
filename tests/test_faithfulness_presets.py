"""Presets: DeepEyes' own prompt format and tool rules, copied from its repository."""

import pytest

from hf_faithful.faithfulness.presets import (
    DEEPEYES_USER_SUFFIX,
    PRESETS,
    model_fields,
    preset_config,
    preset_fields,
    suggested_settings,
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


def test_model_fields_and_suggested_settings(tmp_path):
    # the bundled reference VLM: Qwen3-VL's 0..1000 frame, judged on sufficiency only
    assert model_fields("reference") == {
        "coords": "normalized_1000",
        "judge_metrics": ("sufficiency",),
    }
    assert model_fields("reference", "http://localhost:8000/v1") == {}  # a served name
    assert model_fields("Qwen/Qwen2.5-VL-7B-Instruct") == {}
    reference = suggested_settings("reference")
    assert reference["coords"] == "normalized_1000" and reference["judge_metrics"] == (
        "sufficiency",
    )
    deepeyes = suggested_settings("ChenShawn/DeepEyes-7B")
    assert deepeyes == {
        "preset": "deepeyes",
        "coords": "absolute",
        "judge_metrics": ("reliability", "sufficiency"),
    }
    assert suggested_settings("/models/deepeyes_7b_rl")["preset"] == "deepeyes"
    assert suggested_settings("Qwen/Qwen2.5-VL-7B-Instruct")["coords"] == "absolute"
    assert suggested_settings("Qwen/Qwen3-VL-8B-Instruct")["coords"] == "normalized_1000"
    # a local folder is read for its model_type
    (tmp_path / "config.json").write_text('{"model_type": "qwen3_vl"}')
    assert suggested_settings(str(tmp_path)) == {
        "preset": None,
        "coords": "normalized_1000",
        "judge_metrics": ("reliability", "sufficiency"),
    }
    assert suggested_settings("")["coords"] == BoxRules().coords

"""FaithfulnessConfig: bad settings are refused with the field's name."""

import pytest

from hf_faithful.faithfulness.config import FaithfulnessConfig


def test_config_is_checked():
    with pytest.raises(ValueError, match="visual_interventions"):
        FaithfulnessConfig(visual_interventions=("sepia",))
    with pytest.raises(ValueError, match="baseline"):
        FaithfulnessConfig(baseline="paper")
    with pytest.raises(ValueError, match="user_template"):
        FaithfulnessConfig(user_template="no field")
    with pytest.raises(ValueError, match="judge_metrics"):
        FaithfulnessConfig(judge_metrics=("beauty",))
    with pytest.raises(ValueError, match="confidence"):
        FaithfulnessConfig(confidence=1.5)


def test_every_field_has_help_and_the_system_prompt_resolves():
    import dataclasses

    for field in dataclasses.fields(FaithfulnessConfig):
        assert field.metadata.get("help"), field.name
    assert "image_zoom_in_tool" in FaithfulnessConfig().resolved_system_prompt
    assert FaithfulnessConfig(system_prompt="").resolved_system_prompt == ""


def test_settings_are_json_ready():
    import json

    def lenient(prediction, reference):
        return True

    data = json.loads(json.dumps(FaithfulnessConfig(match=lenient).to_dict()))
    assert data["match"] == "lenient" and data["box_rules"]["coords"] == "absolute"
    assert data["visual_interventions"] == ["noise_gaussian"]


def test_generation_settings_are_checked_and_named_prompts_resolve():
    with pytest.raises(ValueError, match="tool_response must contain"):
        FaithfulnessConfig(tool_response="<tool_response></tool_response>")
    with pytest.raises(ValueError, match="tool_error must contain"):
        FaithfulnessConfig(tool_error="Error")
    with pytest.raises(ValueError, match="validate_judge"):
        FaithfulnessConfig(validate_judge=-1)
    deepeyes = FaithfulnessConfig(system_prompt="deepeyes").resolved_system_prompt
    assert deepeyes.startswith("You are a helpful assistant.\n\n# Tools\n")
    assert '<tools>\n{"type":"function","function":{"name":"image_zoom_in_tool"' in deepeyes
    assert FaithfulnessConfig(system_prompt="Be brief.").resolved_system_prompt == "Be brief."
    assert FaithfulnessConfig().prefill_answer is None  # decided by what the backend can do

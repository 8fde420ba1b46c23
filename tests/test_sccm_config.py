"""SCCMConfig validation: bad values are refused early, naming the field."""

from __future__ import annotations

import pytest

from hf_faithful.mcot.answers import exact_match
from hf_faithful.sccm.config import PRESETS, SCCMConfig, preset_values


def _config(tmp_path, **kwargs) -> SCCMConfig:
    return SCCMConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], **kwargs)


def test_defaults(tmp_path):
    config = _config(tmp_path)
    assert (config.sufficiency_weight, config.minimality_weight) == (1.0, 0.5)
    assert config.answerer == "policy" and config.no_crop_reward == 0.0
    assert config.answer_matcher() is exact_match
    assert config.box_rules("qwen3_vl").coords == "normalized_1000"
    assert config.box_rules("qwen2_5_vl").coords == "absolute"
    assert _config(tmp_path, box_coords="absolute").box_rules("qwen3_vl").coords == "absolute"
    assert config.box_rules().min_side == 30


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"sufficiency_weight": float("nan")}, "sufficiency_weight"),
        ({"answerer": "judge"}, "answerer"),
        ({"answerer": "local"}, "answerer_model"),
        ({"answerer": "openai", "answerer_model": "m"}, "answerer_base_url"),
        ({"no_reference": "ignore"}, "no_reference"),
        ({"minimality_measure": "count"}, "minimality_measure"),
        ({"box_coords": "relative"}, "box_coords"),
        ({"sufficiency_batch_size": 0}, "sufficiency_batch_size"),
        ({"sufficiency_max_new_tokens": 0}, "sufficiency_max_new_tokens"),
        ({"sufficiency_prompt": "no placeholder"}, "sufficiency_prompt"),
        ({"no_crop_reward": float("inf")}, "no_crop_reward"),
        ({"answer_match": "fuzzy"}, "match"),
        ({"answer_match": "hf_faithful.mcot.answers:nope"}, "answer_match"),
        ({"box_min_side": -1}, "min_side"),
    ],
)
def test_bad_values_name_the_field(tmp_path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        _config(tmp_path, **kwargs)


def test_answer_match_import_path(tmp_path):
    config = _config(tmp_path, answer_match="hf_faithful.mcot.answers:choice_match")
    assert config.answer_matcher()("The answer is (C).", "C")
    assert _config(tmp_path, no_crop_reward=None).no_crop_reward is None


CPU = {"use_cpu": True, "bf16": False}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(tmp_path, name):
    config = SCCMConfig.from_preset(name, output_dir=str(tmp_path), **CPU)
    assert isinstance(config, SCCMConfig)
    for key, value in preset_values(name).items():
        if key == "report_to":  # "none" is normalized to []
            assert config.report_to in ([], "none", ["none"])
        elif key not in CPU:
            assert getattr(config, key) == value, key
    # TRL's batch rule holds on one process: rollouts per step are whole groups
    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps
    assert per_step % config.num_generations == 0


def test_deepeyes_preset_is_deepeyes_recipe_plus_sccm(tmp_path):
    config = SCCMConfig.from_preset("deepeyes", output_dir=str(tmp_path), **CPU)
    assert config.num_generations == 16
    assert config.max_completion_length == 10240
    assert config.max_tool_calling_iterations == 4
    assert config.reward_weights == [0.8, 0.2]  # accuracy, format
    assert (config.sufficiency_weight, config.minimality_weight) == (1.0, 0.5)
    assert (config.learning_rate, config.beta) == (1e-6, 0.0)
    assert config.activation_checkpointing is True
    baseline = SCCMConfig.from_preset("deepeyes-baseline", output_dir=str(tmp_path), **CPU)
    assert (baseline.sufficiency_weight, baseline.minimality_weight) == (0.0, 0.0)
    assert baseline.num_generations == 16
    smoke = SCCMConfig.from_preset("smoke", output_dir=str(tmp_path))
    assert smoke.use_cpu and smoke.max_steps == 1 and smoke.save_strategy == "no"


def test_preset_overrides_win_and_presets_are_copies(tmp_path):
    config = SCCMConfig.from_preset(
        "deepeyes", output_dir=str(tmp_path), num_generations=8, reward_weights=[1.0], **CPU
    )
    assert config.num_generations == 8 and config.reward_weights == [1.0]
    config.reward_weights.append(2.0)
    assert PRESETS["deepeyes"]["reward_weights"] == [0.8, 0.2]
    with pytest.raises(ValueError, match="unknown SCCMConfig preset 'deepseek'.*deepeyes"):
        SCCMConfig.from_preset("deepseek")
    with pytest.raises(ValueError, match="sufficiency_weight"):
        SCCMConfig.from_preset("deepeyes", sufficiency_weight=float("nan"), **CPU)

"""SCCMConfig validation: bad values are refused early, naming the field."""

from __future__ import annotations

import pytest

from hf_faithful.mcot.answers import exact_match
from hf_faithful.sccm.config import SCCMConfig


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

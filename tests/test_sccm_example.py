"""examples/train_sccm.py: the no-argument CPU demo trains the reference VLM with SCCM."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_sccm.py"


def _load():
    spec = importlib.util.spec_from_file_location("train_sccm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_demo_trains_the_reference_vlm_and_logs_sccm_rewards():
    example = _load()
    trainer = example.main([])
    steps = [e for e in trainer.state.log_history if "rewards/sccm_sufficiency/mean" in e]
    assert len(steps) == trainer.args.max_steps == 3
    assert trainer.model.config.model_type == "qwen3_vl"
    # the reference VLM zooms by itself (nothing scripted) and ends with an answer
    assert sum(e["tools/call_frequency"] for e in steps) > 0
    assert sum(e["rewards/answer_format/mean"] for e in steps) / len(steps) > 0.5
    for entry in steps:  # minimality is granted only to sufficient rollouts
        assert (
            0.0 <= entry["rewards/sccm_minimality/mean"] <= entry["rewards/sccm_sufficiency/mean"]
        )
    assert trainer.reward_func_names == [
        "accuracy",
        "answer_format",
        "sccm_sufficiency",
        "sccm_minimality",
    ]


def test_cli_requires_model_and_data(tmp_path):
    example = _load()
    with pytest.raises(SystemExit, match="--model and --data"):
        example.main(
            [
                "--output_dir",
                str(tmp_path),
                "--use_cpu",
                "True",
                "--bf16",
                "False",
                "--data",
                "x.parquet",
            ]
        )

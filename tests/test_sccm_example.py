"""examples/train_sccm.py: the no-argument CPU demo trains and logs the SCCM rewards."""

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


def test_demo_runs_offline_and_logs_sccm_rewards():
    example = _load()
    trainer = example.main([])
    steps = [e for e in trainer.state.log_history if "rewards/sccm_sufficiency/mean" in e]
    assert len(steps) == trainer.args.max_steps == 3
    for entry in steps:
        assert entry["tools/call_frequency"] == 1.0  # every rollout zoomed once
        assert (
            0.0 <= entry["rewards/sccm_minimality/mean"] <= entry["rewards/sccm_sufficiency/mean"]
        )
        assert entry["rewards/answer_format/mean"] == 1.0
    assert trainer.reward_func_names == [
        "answer_accuracy",
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

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
    # the reference VLM's learned behaviour: it zooms (on its zoom-needed questions), its
    # traces have the DeepEyes format, and its crops earn sufficiency
    assert sum(e["tools/call_frequency"] for e in steps) > 0
    for entry in steps:
        assert 0.0 <= entry["rewards/sccm_minimality/mean"] <= 1.0
        assert 0.0 <= entry["rewards/sccm_sufficiency/mean"] <= 1.0
        assert entry["rewards/answer_format/mean"] > 0.5
    assert trainer.model.config.model_type == "qwen3_vl"
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

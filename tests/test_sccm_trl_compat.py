"""SCCMRewardTrainer overrides TRL internals: fail loudly when the installed TRL moves them.

A failure here names the internal, how it changed and what in hf_faithful.sccm to re-check
(see hf_faithful/sccm/trl_compat.py for how to move to a new TRL release).
"""

from __future__ import annotations

import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from trl import GRPOTrainer

from hf_faithful.sccm.trainer import SCCMRewardTrainer
from hf_faithful.sccm.trl_compat import (
    TESTED_TRL_VERSION,
    TRL_INTERNALS,
    current_fingerprints,
    trl_internals_report,
)

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _pin(name: str) -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [requirement] = [Requirement(d) for d in dependencies if Requirement(d).name == name]
    return requirement


def test_installed_trl_internals_are_the_tested_ones():
    problems = trl_internals_report()
    assert not problems, (
        "TRL internals that SCCMRewardTrainer relies on changed; re-check each, then update "
        "hf_faithful/sccm/trl_compat.py (current_fingerprints() prints the new values) and "
        "the trl pin in pyproject.toml:\n- " + "\n- ".join(problems)
    )


def test_pyproject_pins_a_range_holding_the_tested_trl():
    pin = _pin("trl")
    assert pin.specifier.contains(TESTED_TRL_VERSION), (pin, TESTED_TRL_VERSION)
    assert pin.specifier.contains(version("trl")), (
        f"installed trl {version('trl')} is outside {pin}"
    )
    # an upper bound: the next minor release is not assumed compatible
    assert not pin.specifier.contains("1.17.0") and not pin.specifier.contains("2.0.0")


def test_every_overridden_trl_method_is_recorded():
    recorded = {i.path.rsplit(".", 1)[-1] for i in TRL_INTERNALS if ":" in i.path}
    overridden = [
        name
        for name, value in vars(SCCMRewardTrainer).items()
        if inspect.isfunction(value) and hasattr(GRPOTrainer, name)
    ]
    assert {"_tool_call_loop", "_tokenize_prompts", "create_model_card", "save_model"} <= set(
        overridden
    )
    missing = sorted(set(overridden) - recorded)
    assert not missing, f"SCCMRewardTrainer overrides {missing}: record them in TRL_INTERNALS"


def test_a_changed_or_missing_internal_is_reported(monkeypatch):
    def _tool_call_loop(self, prompts, prompt_ids, completion_ids, completions, logprobs, images):
        return None

    monkeypatch.setattr(GRPOTrainer, "_tool_call_loop", _tool_call_loop)
    monkeypatch.delattr(GRPOTrainer, "_tokenize_prompts")
    monkeypatch.setattr(GRPOTrainer, "_save_checkpoint", lambda self, model, trial: None)
    report = "\n".join(trl_internals_report())
    assert "trl:GRPOTrainer._tool_call_loop" in report and "changed signature" in report
    assert "result[1] as the completions" in report  # what to re-check
    assert "trl:GRPOTrainer._tokenize_prompts" in report and "is gone" in report
    assert "trl:GRPOTrainer._save_checkpoint" in report and "changed its source" in report
    assert f"tested on trl=={TESTED_TRL_VERSION}" in report


def test_fingerprints_round_trip():
    fingerprints = current_fingerprints()
    for internal in TRL_INTERNALS:
        got = fingerprints[internal.path]
        if internal.signature is not None:
            assert got["signature"] == internal.signature
        if internal.source_sha256 is not None:
            assert got["source_sha256"] == internal.source_sha256


def test_trainer_warns_on_an_untested_trl_with_changed_internals(monkeypatch, caplog):
    import logging

    import trl

    from hf_faithful.sccm.trainer import _warn_on_untested_trl

    monkeypatch.setattr(trl, "__version__", "1.99.0")
    monkeypatch.setattr(GRPOTrainer, "_save_checkpoint", lambda self, model, trial: None)
    with caplog.at_level(logging.WARNING, logger="hf_faithful.sccm.trainer"):
        _warn_on_untested_trl.__wrapped__()
    assert "tested on trl==1.16.0; with trl==1.99.0" in caplog.text
    assert "_save_checkpoint" in caplog.text

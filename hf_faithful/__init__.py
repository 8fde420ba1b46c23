"""hf-faithful: faithful visual thinking and backprop-free structural pruning for the HF stack.

The public API is re-exported here lazily, so ``import hf_faithful`` stays cheap and
the CLI does not import TRL or gradio unless a command needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # reference model and evaluation
    "REFERENCE_MODEL_DIR": "hf_faithful.models",
    "load_reference_model": "hf_faithful.models",
    "build_zoom_vqa": "hf_faithful.data.zoom_vqa",
    "perplexity": "hf_faithful.evaluation.perplexity",
    "evaluate_with_lm_eval": "hf_faithful.evaluation.harness",
    # pruning
    "PruningConfig": "hf_faithful.pruning.config",
    "PolicyGradientPruner": "hf_faithful.pruning.pruner",
    "RecoveryConfig": "hf_faithful.pruning.recover",
    "recover": "hf_faithful.pruning.recover",
    "PrunedLlamaConfig": "hf_faithful.models",  # importing it registers the Auto classes
    "PrunedLlamaForCausalLM": "hf_faithful.models",
    # multimodal chains of thought
    "Trace": "hf_faithful.mcot.trace",
    "Step": "hf_faithful.mcot.trace",
    "Box": "hf_faithful.mcot.zoom",
    "BoxRules": "hf_faithful.mcot.zoom",
    "zoom_in": "hf_faithful.mcot.zoom",
    "load_traces": "hf_faithful.mcot.records",
    "parse_deepeyes": "hf_faithful.mcot.parsing",
    "parse_messages": "hf_faithful.mcot.parsing",
    # faithfulness measurement
    "FaithfulnessEvaluator": "hf_faithful.faithfulness.evaluator",
    "FaithfulnessConfig": "hf_faithful.faithfulness.config",
    "FaithfulnessJudge": "hf_faithful.faithfulness.judge",
    "LocalVLMBackend": "hf_faithful.mcot.backends",
    "OpenAIChatBackend": "hf_faithful.mcot.backends",
    "compute_faithfulness": "hf_faithful.faithfulness.metric",
    # SCCM training
    "SCCMConfig": "hf_faithful.sccm.config",
    "SCCMRewardTrainer": "hf_faithful.sccm.trainer",
    "ZoomInEnvironment": "hf_faithful.sccm.environment",
    "SufficiencyReward": "hf_faithful.sccm.rewards",
    "MinimalityReward": "hf_faithful.sccm.rewards",
    "load_deepeyes": "hf_faithful.sccm.data",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_faithful' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from hf_faithful.data.zoom_vqa import build_zoom_vqa
    from hf_faithful.evaluation.harness import evaluate_with_lm_eval
    from hf_faithful.evaluation.perplexity import perplexity
    from hf_faithful.faithfulness.evaluator import FaithfulnessEvaluator
    from hf_faithful.mcot.trace import Step, Trace
    from hf_faithful.mcot.zoom import Box, BoxRules, zoom_in
    from hf_faithful.models import (
        REFERENCE_MODEL_DIR,
        PrunedLlamaConfig,
        PrunedLlamaForCausalLM,
        load_reference_model,
    )
    from hf_faithful.pruning.config import PruningConfig
    from hf_faithful.pruning.pruner import PolicyGradientPruner
    from hf_faithful.pruning.recover import RecoveryConfig, recover
    from hf_faithful.sccm.config import SCCMConfig
    from hf_faithful.sccm.data import load_deepeyes
    from hf_faithful.sccm.environment import ZoomInEnvironment
    from hf_faithful.sccm.rewards import MinimalityReward, SufficiencyReward
    from hf_faithful.sccm.trainer import SCCMRewardTrainer

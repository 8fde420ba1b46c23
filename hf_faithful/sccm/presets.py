"""Presets of ``SCCMConfig`` for known recipes (``SCCMConfig.from_preset(name)``, or
``hf-faithful sccm --preset name``): plain field values, kept apart from the config class
so that the command line can list them without importing TRL."""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]

# DeepEyes' recipe (arXiv 2505.14362; github.com/Visual-Agent/DeepEyes, verl scripts under
# examples/agent/): GRPO without KL at lr 1e-6, 16 rollouts per prompt, about 10k response
# tokens over at most 4 tool-calling turns (the released final_merged_v1v8_thinklite.sh
# allows 20480 in all, 10240 per turn and 5 turns: override max_completion_length /
# max_tool_calling_iterations to match it), reward 0.8 * accuracy (an LLM judge) + 0.2 *
# format. Its batch is 256 prompts x 16 rollouts per update: on N GPUs set
# gradient_accumulation_steps = 4096 / (N * per_device_train_batch_size).
_DEEPEYES: dict[str, Any] = {
    "num_generations": 16,
    "max_completion_length": 10240,
    "max_tool_calling_iterations": 4,
    "learning_rate": 1e-6,
    "beta": 0.0,
    "temperature": 1.0,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 8,
    "reward_weights": [0.8, 0.2],  # reward_funcs=[accuracy, format], DeepEyes' weights
    "sufficiency_weight": 1.0,  # SCCM's weights (the SCCMConfig defaults)
    "minimality_weight": 0.5,
    "bf16": True,
    "activation_checkpointing": True,
    "logging_steps": 1,
}
PRESETS: dict[str, dict[str, Any]] = {
    # DeepEyes' recipe plus the SCCM rewards.
    "deepeyes": _DEEPEYES,
    # The same recipe without SCCM: the GRPO baseline SCCM is compared with. The SCCM
    # rewards are still computed and logged (weight 0), so both runs report sufficiency.
    "deepeyes-baseline": {**_DEEPEYES, "sufficiency_weight": 0.0, "minimality_weight": 0.0},
    # One short CPU step: checks data, model, tool loop, rewards and saving end to end
    # before a real run is launched.
    "smoke": {
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_completion_length": 32,
        "max_tool_calling_iterations": 1,
        "max_steps": 1,
        "learning_rate": 1e-5,
        "beta": 0.0,
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
    },
}

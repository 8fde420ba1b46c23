"""Policy-gradient structural pruning (arXiv 2406.10576), laid out like a PEFT tuner.

Importing this package registers ``PrunedLlamaConfig`` / ``PrunedLlamaForCausalLM``
with the transformers Auto classes, so pruned folders load without remote code.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from hf_faithful.pruning.config import PruningConfig
from hf_faithful.pruning.modeling_pruned import PrunedLlamaConfig, PrunedLlamaForCausalLM
from hf_faithful.pruning.pruner import PolicyGradientPruner

AutoConfig.register(PrunedLlamaConfig.model_type, PrunedLlamaConfig, exist_ok=True)
AutoModelForCausalLM.register(PrunedLlamaConfig, PrunedLlamaForCausalLM, exist_ok=True)

__all__ = ["PolicyGradientPruner", "PrunedLlamaConfig", "PrunedLlamaForCausalLM", "PruningConfig"]

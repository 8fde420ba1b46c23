"""Policy-gradient structural pruning (arXiv 2406.10576), laid out like a PEFT tuner.

The pruned model classes live in ``hf_faithful.models`` (importing it registers them
with the transformers Auto classes); they are re-exported here for convenience.
"""

from hf_faithful.models import PrunedLlamaConfig, PrunedLlamaForCausalLM
from hf_faithful.pruning.config import PruningConfig
from hf_faithful.pruning.pruner import PolicyGradientPruner

__all__ = ["PolicyGradientPruner", "PrunedLlamaConfig", "PrunedLlamaForCausalLM", "PruningConfig"]

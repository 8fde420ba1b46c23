"""Models hf-faithful ships or produces, and their loaders.

- ``modeling_pruned``: the config and model of a structurally pruned Llama-family LM
  (self-contained: it is copied next to pruned weights and loaded through ``auto_map``).
- ``reference_lm``: ``load_causal_lm`` and the bundled reference LM.
- ``reference_vlm``: ``load_reference_vlm``, the bundled Qwen3-VL that learned to zoom.
- ``vlm_processing``: image-only Qwen-VL processors (no torchvision needed).

Importing this package registers ``PrunedLlamaConfig`` / ``PrunedLlamaForCausalLM``
with the transformers Auto classes, so pruned folders load without remote code.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from hf_faithful.models.modeling_pruned import PrunedLlamaConfig, PrunedLlamaForCausalLM

AutoConfig.register(PrunedLlamaConfig.model_type, PrunedLlamaConfig, exist_ok=True)
AutoModelForCausalLM.register(PrunedLlamaConfig, PrunedLlamaForCausalLM, exist_ok=True)

from hf_faithful.models.reference_lm import (  # noqa: E402  (after registration)
    REFERENCE_MODEL_DIR,
    load_causal_lm,
    load_reference_model,
)
from hf_faithful.models.reference_vlm import (  # noqa: E402
    REFERENCE_VLM_DIR,
    load_reference_vlm,
)

__all__ = [
    "REFERENCE_MODEL_DIR",
    "REFERENCE_VLM_DIR",
    "PrunedLlamaConfig",
    "PrunedLlamaForCausalLM",
    "load_causal_lm",
    "load_reference_model",
    "load_reference_vlm",
]

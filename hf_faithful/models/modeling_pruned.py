"""A Llama-family causal LM whose layers have their own head counts and MLP widths.

Structured pruning leaves every decoder layer with a different number of attention
heads and MLP channels, which Llama, Mistral, Qwen2 and Qwen3 configs cannot express.
``PrunedLlamaConfig`` wraps the original architecture's config (``text_config``) and
adds the per-layer sizes and the pruning provenance; ``PrunedLlamaForCausalLM``
builds the original architecture's decoder and resizes each layer's projections.

This file is shipped next to the weights through ``auto_map`` (``save_pretrained``
copies it), so it may import only torch and transformers: a pruned folder loads
anywhere with ``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import CausalLMOutputWithPast


class PrunedLlamaConfig(PretrainedConfig):
    r"""Config of a structurally pruned Llama-family model.

    Args:
        text_config: the original architecture's config (``model_type`` llama, mistral,
            qwen2, qwen3, ...); its global head counts and MLP width are ignored in favour
            of the per-layer lists.
        num_attention_heads_per_layer / num_key_value_heads_per_layer /
        intermediate_size_per_layer: one entry per decoder layer.
        pruning: provenance (base model, method, sparsity, steps, ...).
        o_proj_bias / down_proj_bias: every layer's attention output / MLP down projection
            has a bias (bias compensation puts the removed units' mean contribution there),
            whatever the original architecture says.
    """

    model_type = "pruned_llama"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")
    }

    text_config: dict | PretrainedConfig | None = None
    num_attention_heads_per_layer: list[int] | None = None
    num_key_value_heads_per_layer: list[int] | None = None
    intermediate_size_per_layer: list[int] | None = None
    pruning: dict | None = None
    tie_word_embeddings: bool = False
    o_proj_bias: bool = False
    down_proj_bias: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        text = self.text_config
        layers = text.num_hidden_layers
        if self.num_attention_heads_per_layer is None:
            self.num_attention_heads_per_layer = [text.num_attention_heads] * layers
        if self.num_key_value_heads_per_layer is None:
            kv = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
            self.num_key_value_heads_per_layer = [kv] * layers
        if self.intermediate_size_per_layer is None:
            self.intermediate_size_per_layer = [text.intermediate_size] * layers
        for name in (
            "num_attention_heads_per_layer",
            "num_key_value_heads_per_layer",
            "intermediate_size_per_layer",
        ):
            values = getattr(self, name)
            if len(values) != layers:
                raise ValueError(f"{name} has {len(values)} entries for {layers} layers")
        for i, (q, kv) in enumerate(
            zip(self.num_attention_heads_per_layer, self.num_key_value_heads_per_layer)
        ):
            if (kv == 0 and q != 0) or (kv > 0 and q % kv) or kv < 0:
                raise ValueError(
                    f"layer {i}: {q} attention heads cannot share {kv} key/value heads"
                )
        if getattr(text, "tie_word_embeddings", False):
            self.tie_word_embeddings = True

    # Read-only views of the text config that generic tools (lm-eval, pipelines) look for.
    @property
    def vocab_size(self) -> int:
        return self.text_config.vocab_size

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def num_hidden_layers(self) -> int:
        return self.text_config.num_hidden_layers

    @property
    def max_position_embeddings(self) -> int:
        return self.text_config.max_position_embeddings


def _resized(
    linear: nn.Linear, in_features: int, out_features: int, bias: bool = False
) -> nn.Linear:
    """A new Linear of the given size, with a bias if ``linear`` had one or ``bias``."""
    with warnings.catch_warnings():  # a fully pruned layer has zero-size projections
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(
            in_features,
            out_features,
            bias=bias or linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )


class EmptyAttention(nn.Module):
    """Attention of a layer that lost every head: it adds nothing (or o_proj's bias).

    It still writes one zero placeholder per token into its cache layer: transformers
    reads the cached length (positions, masks, left padding) from layer 0, and a
    ``DynamicLayer`` holding zero elements reports length 0. A ``[batch, 1, tokens, 1]``
    placeholder keeps that length right for every cache class at negligible memory.
    """

    def __init__(self, attention: nn.Module, hidden_size: int, bias: bool = False):
        super().__init__()
        self.layer_idx = attention.layer_idx
        self.head_dim = attention.head_dim
        self.o_proj = _resized(attention.o_proj, 0, hidden_size, bias)

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None:
            batch, length = hidden_states.shape[:2]
            placeholder = hidden_states.new_zeros(batch, 1, length, 1)
            cache.update(placeholder, placeholder, self.layer_idx)
        return self.o_proj(hidden_states[..., :0]), None


def resize_decoder_layers(decoder: nn.Module, config: PrunedLlamaConfig) -> None:
    """Give every decoder layer of ``decoder`` its own head counts and MLP width."""
    hidden = config.text_config.hidden_size
    for layer, heads, kv_heads, width in zip(
        decoder.layers,
        config.num_attention_heads_per_layer,
        config.num_key_value_heads_per_layer,
        config.intermediate_size_per_layer,
    ):
        attn, mlp = layer.self_attn, layer.mlp
        mlp.gate_proj = _resized(mlp.gate_proj, hidden, width)
        mlp.up_proj = _resized(mlp.up_proj, hidden, width)
        mlp.down_proj = _resized(mlp.down_proj, width, hidden, config.down_proj_bias)
        mlp.intermediate_size = width
        if kv_heads == 0:
            layer.self_attn = EmptyAttention(attn, hidden, config.o_proj_bias)
            continue
        head_dim = attn.head_dim
        attn.q_proj = _resized(attn.q_proj, hidden, heads * head_dim)
        attn.k_proj = _resized(attn.k_proj, hidden, kv_heads * head_dim)
        attn.v_proj = _resized(attn.v_proj, hidden, kv_heads * head_dim)
        attn.o_proj = _resized(attn.o_proj, heads * head_dim, hidden, config.o_proj_bias)
        attn.num_key_value_groups = heads // kv_heads


class PrunedLlamaForCausalLM(PreTrainedModel, GenerationMixin):
    """The original architecture's decoder with per-layer sizes, plus an LM head."""

    config_class = PrunedLlamaConfig
    base_model_prefix = "model"
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: PrunedLlamaConfig):
        super().__init__(config)
        self.model = AutoModel.from_config(config.text_config)
        resize_decoder_layers(self.model, config)
        text = config.text_config
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        logits_to_keep=0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        # Gemma 2 / 3 squash the logits in their *ForCausalLM head, outside the decoder
        softcap = getattr(self.config.text_config, "final_logit_softcapping", None)
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits,
                labels=labels,
                vocab_size=self.config.text_config.vocab_size,
                **kwargs,
            )
        extra = {k: v for k, v in outputs.items() if k != "last_hidden_state"}
        return CausalLMOutputWithPast(loss=loss, logits=logits, **extra)


PrunedLlamaConfig.register_for_auto_class()
PrunedLlamaForCausalLM.register_for_auto_class("AutoModelForCausalLM")

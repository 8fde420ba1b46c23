"""Physically remove masked heads and channels: slice the weights into a smaller model."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import init_empty_weights

from hf_faithful.models.modeling_pruned import PrunedLlamaConfig, PrunedLlamaForCausalLM
from hf_faithful.pruning.units import PrunableLayer


def _kept_indices(layer: PrunableLayer, heads: torch.Tensor, channels: torch.Tensor):
    kv = torch.nonzero(heads).flatten()
    g, hd = layer.group_size, layer.head_dim
    q_heads = (kv[:, None] * g + torch.arange(g)).flatten()
    q_rows = (q_heads[:, None] * hd + torch.arange(hd)).flatten()
    kv_rows = (kv[:, None] * hd + torch.arange(hd)).flatten()
    return q_rows, kv_rows, torch.nonzero(channels).flatten()


@torch.no_grad()
def compress_model(
    model: torch.nn.Module,
    layers: list[PrunableLayer],
    heads: torch.Tensor,
    channels: torch.Tensor,
    *,
    provenance: dict[str, Any] | None = None,
) -> PrunedLlamaForCausalLM:
    """A [`PrunedLlamaForCausalLM`] holding only the units where the masks are 1.

    ``heads`` / ``channels`` are flat 0/1 pool masks (layer order) as returned by
    ``PolicyGradientPruner.hard_masks``. The source model is left untouched; the new
    model's tensors are copies on the source's devices.
    """
    config = model.config
    text_config = config.text_config if isinstance(config, PrunedLlamaConfig) else config
    for i, layer in enumerate(layers):
        if layer.name != f"model.layers.{i}":
            raise ValueError(
                f"compress expects a *ForCausalLM with decoder layers at model.layers.N, "
                f"found {layer.name!r}"
            )
    head_parts = heads.split([layer.num_kv_heads for layer in layers])
    channel_parts = channels.split([layer.intermediate_size for layer in layers])
    # layers that lose every head keep only o_proj (as a 0-input projection)
    empty = {
        layer.name + ".self_attn." for layer, p in zip(layers, head_parts) if int(p.sum()) == 0
    }

    text_dict = text_config.to_dict()
    text_dict["head_dim"] = layers[0].head_dim
    pruned_config = PrunedLlamaConfig(
        text_config=text_dict,
        num_attention_heads_per_layer=[
            int(p.sum()) * layer.group_size for p, layer in zip(head_parts, layers)
        ],
        num_key_value_heads_per_layer=[int(p.sum()) for p in head_parts],
        intermediate_size_per_layer=[int(p.sum()) for p in channel_parts],
        pruning=provenance or {},
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
    )

    slices: dict[str, tuple[int, torch.Tensor]] = {}  # parameter name -> (dim, kept indices)
    for layer, hp, cp in zip(layers, head_parts, channel_parts):
        q_rows, kv_rows, kept = _kept_indices(layer, hp, cp)
        prefix = f"{layer.name}."
        attn = prefix + "self_attn."
        mlp = prefix + "mlp."
        for name, dim, index in (
            ("q_proj.weight", 0, q_rows),
            ("q_proj.bias", 0, q_rows),
            ("k_proj.weight", 0, kv_rows),
            ("k_proj.bias", 0, kv_rows),
            ("v_proj.weight", 0, kv_rows),
            ("v_proj.bias", 0, kv_rows),
            ("o_proj.weight", 1, q_rows),
        ):
            slices[attn + name] = (dim, index)
        for name, dim in (
            ("gate_proj.weight", 0),
            ("gate_proj.bias", 0),
            ("up_proj.weight", 0),
            ("up_proj.bias", 0),
            ("down_proj.weight", 1),
        ):
            slices[mlp + name] = (dim, kept)

    state = {}
    for name, tensor in model.state_dict().items():
        prefix, _, leaf = name.rpartition(".")
        owner = prefix.rpartition(".")[0] + "."
        if owner in empty and not prefix.endswith("o_proj"):
            continue
        if name in slices:
            dim, index = slices[name]
            state[name] = tensor.index_select(dim, index.to(tensor.device))
        else:
            state[name] = tensor.clone()

    with init_empty_weights(include_buffers=False):
        pruned = PrunedLlamaForCausalLM(pruned_config)
    missing, unexpected = pruned.load_state_dict(state, strict=False, assign=True)
    tied = {"lm_head.weight"} if pruned_config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"cannot map {type(model).__name__} onto PrunedLlamaForCausalLM: missing "
            f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    pruned.tie_weights()
    # buffers (rotary frequencies) were created on CPU: follow the weights
    for module in pruned.modules():
        for key, buf in module.named_buffers(recurse=False):
            owner = next(module.parameters(), None) or pruned.get_input_embeddings().weight
            module._buffers[key] = buf.to(owner.device)
    if getattr(model, "generation_config", None) is not None:
        pruned.generation_config = model.generation_config
    pruned.config._name_or_path = getattr(config, "_name_or_path", "")
    device_map = getattr(model, "hf_device_map", None)
    if device_map and len(set(device_map.values())) > 1:
        # spread like the source model: same module names, so the same map applies
        from accelerate import dispatch_model

        pruned = dispatch_model(pruned, device_map=device_map)
    return pruned.eval()

"""Physically remove masked heads and channels: slice the weights into a smaller model.

``check_compressible`` runs the whole path (mask, compress, compare) on a tiny random
copy of a config, so an architecture that only looks Llama-like is refused before
hours of optimization rather than after.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from accelerate import init_empty_weights
from transformers import AutoModelForCausalLM, PretrainedConfig

from hf_faithful.models.modeling_pruned import PrunedLlamaConfig, PrunedLlamaForCausalLM
from hf_faithful.pruning.units import PrunableLayer, UnitMasks, find_prunable_layers

# Sizes of the tiny copy ``check_compressible`` builds: 2 KV groups of 2 query heads.
_TINY = {
    "vocab_size": 64,
    "intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
_CHECKED: dict[str, str | None] = {}  # tiny config (JSON) -> refusal reason, None if fine


def check_layer_names(layers: list[PrunableLayer]) -> None:
    """Raise unless the layers sit at ``model.layers.N``, where the pruned model puts them."""
    for i, layer in enumerate(layers):
        if layer.name != f"model.layers.{i}":
            raise ValueError(
                f"compress expects a *ForCausalLM with decoder layers at model.layers.N, "
                f"found {layer.name!r}"
            )


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
    input_means: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
) -> PrunedLlamaForCausalLM:
    """A [`PrunedLlamaForCausalLM`] holding only the units where the masks are 1.

    ``heads`` / ``channels`` are flat 0/1 pool masks (layer order) as returned by
    ``PolicyGradientPruner.hard_masks``. The source model is left untouched; the new
    model's tensors are copies on the source's devices.

    ``input_means`` (flat calibration means of the inputs of every ``o_proj`` and every
    ``down_proj``; None for a pool left alone) turns on bias compensation: each
    projection gains the bias ``W[:, removed] @ mean[removed]`` (added to any bias it
    had), so the model computes what the masked model with removed inputs replaced by
    their means computes. Its config records the biases, so ``from_pretrained`` builds
    them.
    """
    config = model.config
    text_config = config.text_config if isinstance(config, PrunedLlamaConfig) else config
    check_layer_names(layers)
    o_means, down_means = input_means if input_means is not None else (None, None)
    biases = _compensation_biases(layers, heads, channels, o_means, down_means)
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
        o_proj_bias=_had_bias(config, "o_proj_bias") or o_means is not None,
        down_proj_bias=_had_bias(config, "down_proj_bias") or down_means is not None,
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
    for name, bias in biases.items():
        weight = state[name.removesuffix("bias") + "weight"]
        if name in state:
            bias = bias + state[name].double()
        state[name] = bias.to(device=weight.device, dtype=weight.dtype)

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
    # buffers (rotary frequencies, Gemma's embedding scale) were created on CPU: follow
    # the module's weights, or the embeddings where the module has none. (`is None`, not
    # `or`: a weight tensor has no truth value.)
    embeddings = pruned.get_input_embeddings().weight
    for module in pruned.modules():
        for key, buf in module.named_buffers(recurse=False):
            owner = next(module.parameters(), None)
            module._buffers[key] = buf.to((embeddings if owner is None else owner).device)
    if getattr(model, "generation_config", None) is not None:
        pruned.generation_config = model.generation_config
    pruned.config._name_or_path = getattr(config, "_name_or_path", "")
    device_map = getattr(model, "hf_device_map", None)
    if device_map and len(set(device_map.values())) > 1:
        # spread like the source model: same module names, so the same map applies
        from accelerate import dispatch_model

        pruned = dispatch_model(pruned, device_map=device_map)
    return pruned.eval()


def _had_bias(config: PretrainedConfig, name: str) -> bool:
    """An already-pruned source keeps the compensation biases it carries."""
    return isinstance(config, PrunedLlamaConfig) and bool(getattr(config, name, False))


@torch.no_grad()
def _compensation_biases(
    layers: list[PrunableLayer],
    heads: torch.Tensor,
    channels: torch.Tensor,
    o_means: torch.Tensor | None,
    down_means: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """Parameter name -> float64 bias ``W[:, removed] @ mean[removed]`` for each
    ``o_proj`` / ``down_proj`` whose pool has means."""
    from hf_faithful.pruning.units import compensation_bias

    out: dict[str, torch.Tensor] = {}
    o_sizes = [layer.num_heads * layer.head_dim for layer in layers]
    for means, sizes in ((o_means, o_sizes), (down_means, [n.intermediate_size for n in layers])):
        if means is not None and means.numel() != sum(sizes):
            raise ValueError(f"input means have {means.numel()} entries, expected {sum(sizes)}")
    head_parts = heads.split([layer.num_kv_heads for layer in layers])
    channel_parts = channels.split([layer.intermediate_size for layer in layers])
    o_parts = o_means.split(o_sizes) if o_means is not None else [None] * len(layers)
    d_parts = (
        down_means.split([n.intermediate_size for n in layers])
        if down_means is not None
        else [None] * len(layers)
    )
    for layer, hp, cp, om, dm in zip(layers, head_parts, channel_parts, o_parts, d_parts):
        if om is not None:
            mask = hp.repeat_interleave(layer.group_size * layer.head_dim)
            weight = layer.attention.o_proj.weight.detach().double()
            out[f"{layer.name}.self_attn.o_proj.bias"] = compensation_bias(weight, om, mask)
        if dm is not None:
            weight = layer.mlp.down_proj.weight.detach().double()
            out[f"{layer.name}.mlp.down_proj.bias"] = compensation_bias(weight, dm, cp)
    return out


def _text_config(config: PretrainedConfig) -> PretrainedConfig:
    if isinstance(config, PrunedLlamaConfig):
        return config.text_config
    return config.get_text_config(decoder=True)


def _tiny_copy(text_config: PretrainedConfig) -> PretrainedConfig:
    """``text_config`` with 2 layers and small widths; everything else (norms, rope,
    softcapping, sliding windows, scalings) is kept, since that is what is checked."""
    values = text_config.to_dict()
    layers = values.get("num_hidden_layers")
    per_head = values["hidden_size"] // values["num_attention_heads"]
    values.update(_TINY)
    # the same hidden width per query head: models that derive head_dim from it, or
    # assume heads * head_dim == hidden_size, stay consistent
    values["hidden_size"] = _TINY["num_attention_heads"] * per_head
    for key, value in list(values.items()):  # per-layer lists (layer_types, ...)
        if isinstance(value, list) and layers and len(value) == layers:
            values[key] = value[: _TINY["num_hidden_layers"]]
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        values[key] = None  # ids of the real vocabulary do not fit the tiny one
    return type(text_config).from_dict(values)


def _randomize(model: torch.nn.Module) -> None:
    # Default inits give near-zero logits, under which a dropped logit scale or a
    # softcap goes unnoticed: use O(1) activations and norms away from their init.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 2.0 / param.shape[-1] ** 0.5)
            else:
                param.add_(torch.randn_like(param), alpha=0.1)


def _full_width_norms(layers: list[PrunableLayer]) -> list[str]:
    """q_norm / k_norm that normalize all heads together (OLMo-2), not one head at a time."""
    found = []
    for layer in layers:
        for name, heads in (("q_norm", layer.num_heads), ("k_norm", layer.num_kv_heads)):
            weight = getattr(getattr(layer.attention, name, None), "weight", None)
            if heads > 1 and weight is not None and weight.numel() == heads * layer.head_dim:
                found.append(name)
    return sorted(set(found))


@torch.no_grad()
def _dry_run(tiny: PretrainedConfig) -> str | None:
    """Why compressing models of ``tiny``'s architecture is not exact, or None."""
    model = AutoModelForCausalLM.from_config(tiny).float().eval()
    _randomize(model)
    layers = find_prunable_layers(model)
    check_layer_names(layers)
    norms = _full_width_norms(layers)
    if norms:
        return (
            f"its {' and '.join(norms)} normalize over all heads together (one RMSNorm over "
            "the full width), so removing a head changes the others and no per-head slice "
            "of the weights is equivalent"
        )
    # layer 0 loses every head (an EmptyAttention), the others keep their last KV group
    heads = torch.cat(
        [torch.zeros(layers[0].num_kv_heads)]
        + [
            torch.arange(layer.num_kv_heads).ge(layer.num_kv_heads - 1).float()
            for layer in layers[1:]
        ]
    )
    channels = torch.cat([torch.arange(n.intermediate_size) % 2 for n in layers]).float()
    masks = UnitMasks(layers)
    masks.set(heads, channels)
    ids = torch.randint(0, tiny.vocab_size, (2, 8))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, :3] = 0  # left padding, as in batched generation
    generate = {
        "max_new_tokens": 3,
        "do_sample": False,
        "pad_token_id": 0,
        "output_logits": True,
        "return_dict_in_generate": True,
    }
    with masks.applied():
        masked = model(ids).logits
        masked_steps = model.generate(ids, attention_mask=attention_mask, **generate).logits
    pruned = compress_model(model, layers, heads, channels)
    compressed = pruned(ids).logits
    tolerance = 1e-4 * max(1.0, float(masked.abs().max()))
    if not torch.allclose(compressed, masked, rtol=0, atol=tolerance):
        error = float((compressed - masked).abs().max())
        return (
            f"the compressed model's logits differ from the masked model's by {error:.3g} "
            "(its *ForCausalLM does more than the decoder and a plain LM head)"
        )
    steps = pruned.generate(ids, attention_mask=attention_mask, **generate).logits
    if not all(torch.allclose(a, b, rtol=0, atol=tolerance) for a, b in zip(steps, masked_steps)):
        return "the compressed model generates differently from the masked model"
    return None


def check_compressible(config: PretrainedConfig) -> None:
    """Raise ValueError, naming the model type, unless its models compress exactly.

    Compression rebuilds the source's decoder inside [`PrunedLlamaForCausalLM`] with
    per-layer sizes. Architectures that pass as Llama-like but are not (OLMo-2's
    full-width q_norm / k_norm couple the heads; Cohere scales its logits in the head)
    would crash, or silently differ, only after the optimization. A tiny random copy of
    the config is masked, compressed and compared instead, in well under a second, and
    the verdict is cached per architecture and settings.
    """
    text_config = _text_config(config)
    model_type = getattr(text_config, "model_type", None) or type(text_config).__name__
    try:
        tiny = _tiny_copy(text_config)
        key = json.dumps(tiny.to_dict(), sort_keys=True, default=str)
    except Exception as exc:  # noqa: BLE001 - any failure means the check cannot run
        raise ValueError(
            f"cannot check that model_type {model_type!r} compresses exactly: its config "
            f"does not shrink to a tiny copy ({type(exc).__name__}: {exc})"
        ) from exc
    if key not in _CHECKED:
        try:
            with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
                torch.manual_seed(0)
                _CHECKED[key] = _dry_run(tiny)
        except Exception as exc:  # noqa: BLE001 - a crash is the verdict
            _CHECKED[key] = f"a pruned tiny copy fails ({type(exc).__name__}: {exc})"
    reason = _CHECKED[key]
    if reason is not None:
        raise ValueError(
            f"cannot prune model_type {model_type!r}: {reason}. Supported are Llama-family "
            "decoders whose attention and MLP work head by head and channel by channel "
            "(llama, mistral, qwen2, qwen3, gemma, gemma2, ...)"
        )

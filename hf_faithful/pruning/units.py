"""Prunable units of a Llama-family model and the hooks that mask them.

Units are found from the module structure (an attention module with
``q_proj/k_proj/v_proj/o_proj`` and an MLP with ``gate_proj/up_proj/down_proj`` in
the same decoder layer), so Llama, Mistral, Qwen2, Qwen3 and already-pruned
heterogeneous models are handled alike. One unit is a KV-head group (one K head, one
V head and its query heads) or one MLP channel.

Masking a unit zeroes its slice of the input of ``o_proj`` / ``down_proj``, which is
exactly equivalent to deleting its rows and columns. With bias compensation (FLAP) a
removed input is instead replaced by its calibration mean, which is exactly a bias
``W[:, removed] @ mean[removed]`` added to the projection's output, so that is what
the hooks add (and what the compressed model stores). Mask buffers are allocated
once per layer, on that layer's device, and updated in place; the hooks exist only
inside ``with masks.applied():`` so an unmasked model runs untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


@dataclass
class PrunableLayer:
    """One decoder layer's attention and MLP, with the sizes read from the weights."""

    index: int
    name: str
    attention: nn.Module
    mlp: nn.Module
    head_dim: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def device(self) -> torch.device:
        return self.attention.o_proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.attention.o_proj.weight.dtype


def _is_attention(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Linear) for n in ATTENTION_PROJECTIONS)


def _is_mlp(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Linear) for n in MLP_PROJECTIONS)


def _head_dim(attention: nn.Module, model: nn.Module) -> int:
    head_dim = getattr(attention, "head_dim", None)
    if head_dim is None:
        config = getattr(model, "config", None)
        text_config = config.get_text_config() if config is not None else None
        head_dim = getattr(text_config, "head_dim", None) or (
            text_config.hidden_size // text_config.num_attention_heads if text_config else None
        )
    if not head_dim:
        raise ValueError(
            f"cannot determine head_dim of attention module {type(attention).__name__}"
        )
    return int(head_dim)


def find_prunable_layers(model: nn.Module) -> list[PrunableLayer]:
    """Decoder layers of ``model`` in forward order; raises ValueError if there are none."""
    layers: list[PrunableLayer] = []
    for name, module in model.named_modules():
        children = dict(module.named_children())
        attention = next((c for c in children.values() if _is_attention(c)), None)
        mlp = next((c for c in children.values() if _is_mlp(c)), None)
        if attention is None or mlp is None:
            continue
        head_dim = _head_dim(attention, model)
        q_out, k_out = attention.q_proj.out_features, attention.k_proj.out_features
        if q_out % head_dim or k_out % head_dim or (q_out // head_dim) % max(k_out // head_dim, 1):
            raise ValueError(
                f"layer {name}: q_proj/k_proj sizes ({q_out}, {k_out}) are not whole heads of "
                f"head_dim={head_dim} in whole KV groups"
            )
        if attention.o_proj.in_features != q_out:
            raise ValueError(
                f"layer {name}: o_proj takes {attention.o_proj.in_features} inputs, q_proj gives {q_out}"
            )
        layers.append(
            PrunableLayer(
                index=len(layers),
                name=name,
                attention=attention,
                mlp=mlp,
                head_dim=head_dim,
                num_heads=q_out // head_dim,
                num_kv_heads=k_out // head_dim,
                intermediate_size=mlp.down_proj.in_features,
            )
        )
    if not layers:
        raise ValueError(
            f"cannot prune {type(model).__name__}: found no decoder layer with an attention module "
            f"({'/'.join(ATTENTION_PROJECTIONS)}) and an MLP ({'/'.join(MLP_PROJECTIONS)}); "
            "supported: Llama-family causal LMs (Llama, Mistral, Qwen2, Qwen3, ...)"
        )
    if any(layer.num_kv_heads == 0 for layer in layers):
        raise ValueError("cannot prune a model that already has a layer without attention heads")
    return layers


def _mask_input(module: nn.Module, args: tuple, mask: torch.Tensor):
    # A forward pre-hook replaces the module's input only when it returns something:
    # multiply in place (no extra activation) unless autograd needs the original.
    x = args[0]
    if x.requires_grad:
        return (x * mask, *args[1:])
    x.mul_(mask)
    return None


def _add_bias(module: nn.Module, args: tuple, output: torch.Tensor, bias: torch.Tensor):
    # A forward hook replaces the output only when it returns something.
    if output.requires_grad:
        return output + bias
    output.add_(bias)
    return None


@torch.no_grad()
def compensation_bias(
    weight: torch.Tensor, mean: torch.Tensor, mask: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``W[:, removed] @ mean[removed]`` for a 0/1 (or fractional) input ``mask``: the
    output shift of replacing each removed input by its mean. On the CPU computed in
    float32 or wider (CPU bf16 matmuls are slow and sum in bf16); on a GPU in the
    weight's dtype (cuBLAS accumulates in float32, and a float32 copy of every weight at
    every step would cost memory). Stored in ``out`` (the weight's dtype) if given."""
    dtype = weight.dtype if weight.is_cuda else torch.promote_types(weight.dtype, torch.float32)
    removed = mean.to(weight.device, dtype) * (1 - mask.to(weight.device, dtype))
    bias = weight.to(dtype) @ removed
    if out is None:
        return bias
    return out.copy_(bias)


class UnitMasks:
    """Per-layer 0/1 mask buffers for heads and channels and the hooks applying them.

    Masks are set from flat pool vectors (all layers' KV groups, all layers' channels,
    in layer order) with :meth:`set`; ``None`` for a pool leaves it unmasked.
    """

    def __init__(self, layers: list[PrunableLayer]):
        self.layers = layers
        self.num_heads = sum(layer.num_kv_heads for layer in layers)
        self.num_channels = sum(layer.intermediate_size for layer in layers)
        self.head_sizes = [layer.num_kv_heads for layer in layers]
        self.channel_sizes = [layer.intermediate_size for layer in layers]
        self._head_buffers = [
            torch.ones(layer.num_heads * layer.head_dim, device=layer.device, dtype=layer.dtype)
            for layer in layers
        ]
        self._channel_buffers = [
            torch.ones(layer.intermediate_size, device=layer.device, dtype=layer.dtype)
            for layer in layers
        ]
        self._heads_active = False
        self._channels_active = False
        # bias compensation: per-layer input means and the output biases they give
        self._o_means: list[torch.Tensor] | None = None
        self._down_means: list[torch.Tensor] | None = None
        self._o_bias = [
            torch.zeros(layer.attention.o_proj.out_features, device=layer.device, dtype=layer.dtype)
            for layer in layers
        ]
        self._down_bias = [
            torch.zeros(layer.mlp.down_proj.out_features, device=layer.device, dtype=layer.dtype)
            for layer in layers
        ]

    @property
    def compensating(self) -> bool:
        return self._o_means is not None

    def set_means(self, o_means: torch.Tensor | None, down_means: torch.Tensor | None) -> None:
        """Turn bias compensation on with the flat calibration means of the inputs of
        ``o_proj`` (all layers' heads x head_dim) and ``down_proj`` (all channels), or off
        with ``None``. Takes effect at the next :meth:`set`."""
        if o_means is None or down_means is None:
            self._o_means = self._down_means = None
            return
        o_sizes = [layer.num_heads * layer.head_dim for layer in self.layers]
        if o_means.numel() != sum(o_sizes) or down_means.numel() != self.num_channels:
            raise ValueError(
                f"input means have {o_means.numel()} / {down_means.numel()} entries, expected "
                f"{sum(o_sizes)} / {self.num_channels}"
            )
        self._o_means = [
            m.to(layer.device) for m, layer in zip(o_means.split(o_sizes), self.layers)
        ]
        self._down_means = [
            m.to(layer.device)
            for m, layer in zip(down_means.split(self.channel_sizes), self.layers)
        ]

    @torch.no_grad()
    def set(self, heads: torch.Tensor | None, channels: torch.Tensor | None) -> None:
        """Copy flat 0/1 (or fractional) masks into the per-layer buffers, in place."""
        if heads is not None:
            if heads.numel() != self.num_heads:
                raise ValueError(
                    f"heads mask has {heads.numel()} entries, expected {self.num_heads}"
                )
            for layer, buf, part in zip(
                self.layers, self._head_buffers, heads.split(self.head_sizes)
            ):
                width = layer.group_size * layer.head_dim
                buf.view(layer.num_kv_heads, width).copy_(part[:, None].expand(-1, width))
        if channels is not None:
            if channels.numel() != self.num_channels:
                raise ValueError(
                    f"channels mask has {channels.numel()} entries, expected {self.num_channels}"
                )
            for buf, part in zip(self._channel_buffers, channels.split(self.channel_sizes)):
                buf.copy_(part)
        self._heads_active = heads is not None
        self._channels_active = channels is not None
        if self.compensating:
            for i, layer in enumerate(self.layers):
                if self._heads_active:
                    compensation_bias(
                        layer.attention.o_proj.weight,
                        self._o_means[i],
                        self._head_buffers[i],
                        out=self._o_bias[i],
                    )
                if self._channels_active:
                    compensation_bias(
                        layer.mlp.down_proj.weight,
                        self._down_means[i],
                        self._channel_buffers[i],
                        out=self._down_bias[i],
                    )

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Register the masking hooks for the duration of the block."""
        handles = []
        try:
            for i, (layer, hbuf, cbuf) in enumerate(
                zip(self.layers, self._head_buffers, self._channel_buffers)
            ):
                for active, proj, buf, bias in (
                    (self._heads_active, layer.attention.o_proj, hbuf, self._o_bias[i]),
                    (self._channels_active, layer.mlp.down_proj, cbuf, self._down_bias[i]),
                ):
                    if not active:
                        continue
                    handles.append(
                        proj.register_forward_pre_hook(lambda m, a, buf=buf: _mask_input(m, a, buf))
                    )
                    if self.compensating:
                        handles.append(
                            proj.register_forward_hook(
                                lambda m, a, out, bias=bias: _add_bias(m, a, out, bias)
                            )
                        )
            yield
        finally:
            for handle in handles:
                handle.remove()

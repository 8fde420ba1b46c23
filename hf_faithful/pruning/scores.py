"""Importance metrics, score transforms, the budget projection and hard masks.

Each metric returns one number per unit as two flat pool vectors (KV-head groups,
MLP channels; layer order), so any of them is a one-shot pruner on its own:
``metric -> transform -> hard_mask -> compress``.

- ``wanda_sp`` (FLAP's WIFN): ``M_j = mean_i |W_ij| * ||X_j||_2`` for input channel j
  of ``o_proj`` / ``down_proj``.
- ``flap`` (FLAP's WIFV fluctuation): ``M_j = Var(X_j) * sum_i W_ij^2``; for attention
  the released code ranks its square, and so do we.
- ``magnitude``: L2 norm of all weights of the unit (q/k/v rows and o_proj columns of
  a KV group; gate/up rows and the down_proj column of a channel).
- ``random``: uniform noise.

A KV-head group aggregates its ``o_proj`` input channels by summing over head_dim
and averaging over the query heads that share the KV head.

FLAP's own allocation (``cost_aware_masks``) instead standardizes each module's
channel metric, averages it over a head, and keeps heads and channels above one
threshold chosen by parameter cost. ``collect_sequential_stats`` gives Wanda's
sequential calibration (each layer measured with the layers before it pruned).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from hf_faithful.pruning.units import PrunableLayer

METRICS = ("wanda_sp", "flap", "magnitude", "random")


@dataclass
class ActivationStats:
    """Per-layer sums of x and x^2 of the inputs of ``o_proj`` and ``down_proj``."""

    o_sum: list[torch.Tensor]
    o_sq: list[torch.Tensor]
    down_sum: list[torch.Tensor]
    down_sq: list[torch.Tensor]
    tokens: int = 0

    def variance(self, kind: str, index: int) -> torch.Tensor:
        total, sq = (self.o_sum, self.o_sq) if kind == "o" else (self.down_sum, self.down_sq)
        n = max(self.tokens, 2)
        return (sq[index] - total[index].pow(2) / n).clamp_min(0) / (n - 1)

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat calibration means of the inputs of all ``o_proj`` and all ``down_proj``
        (layer order, float64 on the CPU): what bias compensation puts in a removed
        unit's place."""
        n = max(self.tokens, 1)
        return (
            torch.cat([t.cpu() for t in self.o_sum]) / n,
            torch.cat([t.cpu() for t in self.down_sum]) / n,
        )


def empty_stats(layers: Sequence[PrunableLayer]) -> ActivationStats:
    """Zeroed float64 sums for ``layers``, each on its layer's device."""

    def zeros(n: int, layer: PrunableLayer) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.float64, device=layer.device)

    return ActivationStats(
        o_sum=[zeros(layer.num_heads * layer.head_dim, layer) for layer in layers],
        o_sq=[zeros(layer.num_heads * layer.head_dim, layer) for layer in layers],
        down_sum=[zeros(layer.intermediate_size, layer) for layer in layers],
        down_sq=[zeros(layer.intermediate_size, layer) for layer in layers],
    )


def _stat_hooks(layer: PrunableLayer, stats: ActivationStats, i: int) -> list:
    return [
        layer.attention.o_proj.register_forward_pre_hook(
            _accumulate(stats.o_sum[i], stats.o_sq[i])
        ),
        layer.mlp.down_proj.register_forward_pre_hook(
            _accumulate(stats.down_sum[i], stats.down_sq[i])
        ),
    ]


def _accumulate(total: torch.Tensor, sq: torch.Tensor):
    def hook(module, args):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).to(total.dtype)
        total.add_(x.sum(0))
        sq.add_(x.pow(2).sum(0))
        return None  # a pre-hook that returns a value would replace the module's input

    return hook


@torch.no_grad()
def collect_activation_stats(
    model: torch.nn.Module,
    layers: list[PrunableLayer],
    batches: Iterable[torch.Tensor],
    *,
    device: torch.device | None = None,
    progress: bool = True,
) -> ActivationStats:
    """Run ``batches`` of token ids through ``model`` and accumulate input statistics."""
    stats = empty_stats(layers)
    handles = [h for i, layer in enumerate(layers) for h in _stat_hooks(layer, stats, i)]
    try:
        for batch in tqdm(list(batches), desc="activation statistics", disable=not progress):
            model(input_ids=batch.to(device) if device is not None else batch, use_cache=False)
            stats.tokens += batch.numel()
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _heads_from_channels(values: torch.Tensor, layer: PrunableLayer) -> torch.Tensor:
    return values.view(layer.num_kv_heads, layer.group_size, layer.head_dim).sum(-1).mean(-1)


def _channel_metrics(
    method: str, layer: PrunableLayer, stats: ActivationStats, i: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input channel of ``o_proj`` and of ``down_proj`` (float64): WIFN or WIFV, the
    attention one squared for FLAP as its released code does."""
    o_w = layer.attention.o_proj.weight.detach().double()
    d_w = layer.mlp.down_proj.weight.detach().double()
    if method == "wanda_sp":
        return o_w.abs().mean(0) * stats.o_sq[i].sqrt(), d_w.abs().mean(0) * stats.down_sq[i].sqrt()
    o_metric = stats.variance("o", i) * o_w.pow(2).sum(0)
    return o_metric.pow(2), stats.variance("down", i) * d_w.pow(2).sum(0)


@torch.no_grad()
def layer_metrics(
    method: str,
    layer: PrunableLayer,
    stats: ActivationStats | None,
    i: int,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance of the KV-head groups and MLP channels of ``layer`` (index ``i`` in
    ``stats``), float64 on the CPU; higher = keep."""
    if method in ("wanda_sp", "flap"):
        o_metric, d_metric = _channel_metrics(method, layer, stats, i)
        return _heads_from_channels(o_metric, layer).cpu(), d_metric.cpu()
    if method == "magnitude":
        attn, mlp = layer.attention, layer.mlp
        hd, g = layer.head_dim, layer.group_size
        q, k, v = (
            proj.weight.detach().double().pow(2).sum(1).view(layer.num_kv_heads, -1).sum(1)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
        )
        o = attn.o_proj.weight.detach().double().pow(2).sum(0).view(layer.num_kv_heads, g * hd)
        gate = mlp.gate_proj.weight.detach().double().pow(2).sum(1)
        up = mlp.up_proj.weight.detach().double().pow(2).sum(1)
        down = mlp.down_proj.weight.detach().double().pow(2).sum(0)
        return (q + k + v + o.sum(1)).sqrt().cpu(), (gate + up + down).sqrt().cpu()
    return (  # random
        torch.rand(layer.num_kv_heads, generator=generator, dtype=torch.float64),
        torch.rand(layer.intermediate_size, generator=generator, dtype=torch.float64),
    )


def _check_metric(method: str, stats: ActivationStats | None) -> None:
    if method not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {method!r}")
    if method in ("wanda_sp", "flap") and stats is None:
        raise ValueError(f"metric {method!r} needs activation statistics")


@torch.no_grad()
def unit_metrics(
    method: str,
    layers: list[PrunableLayer],
    stats: ActivationStats | None = None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance of every KV-head group and MLP channel (float64 on CPU; higher = keep)."""
    _check_metric(method, stats)
    parts = [
        layer_metrics(method, layer, stats, i, generator=generator)
        for i, layer in enumerate(layers)
    ]
    return torch.cat([h for h, _ in parts]), torch.cat([c for _, c in parts])


def _standardize(x: torch.Tensor) -> torch.Tensor:
    std = x.std() if x.numel() > 1 else x.new_tensor(0.0)
    return (x - x.mean()) / std if std > 0 else torch.zeros_like(x)


@torch.no_grad()
def standardized_metrics(
    method: str,
    layers: list[PrunableLayer],
    stats: ActivationStats | None = None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FLAP's per-module standardization, comparable across layers and pools.

    For the data metrics each module's channel metric is z-scored over its channels and
    a KV-head group takes the mean over its channels (FLAP: standardize, then average
    over head_dim); the unit-level metrics (magnitude, random) are z-scored per layer.
    """
    _check_metric(method, stats)
    heads, channels = [], []
    for i, layer in enumerate(layers):
        if method in ("wanda_sp", "flap"):
            o_metric, d_metric = _channel_metrics(method, layer, stats, i)
            z = _standardize(o_metric).view(layer.num_kv_heads, -1).mean(1)
            heads.append(z.cpu())
            channels.append(_standardize(d_metric).cpu())
        else:
            h, c = layer_metrics(method, layer, stats, i, generator=generator)
            heads.append(_standardize(h))
            channels.append(_standardize(c))
    return torch.cat(heads), torch.cat(channels)


def _bias_size(linear: torch.nn.Module) -> int:
    return 0 if getattr(linear, "bias", None) is None else 1


def unit_costs(layers: Sequence[PrunableLayer]) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameters one KV-head group and one MLP channel of each layer hold (float64).

    A group: its query, key and value rows (with biases) and its ``o_proj`` columns; a
    channel: its gate and up rows and its ``down_proj`` column. FLAP's 512/3 for LLaMA
    heads (head_dim 128, no GQA) is this ratio.
    """
    heads, channels = [], []
    for layer in layers:
        attn, mlp, hd, g = layer.attention, layer.mlp, layer.head_dim, layer.group_size
        group = (
            g * hd * (attn.q_proj.in_features + _bias_size(attn.q_proj))
            + hd * (attn.k_proj.in_features + _bias_size(attn.k_proj))
            + hd * (attn.v_proj.in_features + _bias_size(attn.v_proj))
            + g * hd * attn.o_proj.out_features
        )
        channel = (
            mlp.gate_proj.in_features
            + _bias_size(mlp.gate_proj)
            + mlp.up_proj.in_features
            + _bias_size(mlp.up_proj)
            + mlp.down_proj.out_features
        )
        heads.append(torch.full((layer.num_kv_heads,), float(group), dtype=torch.float64))
        channels.append(torch.full((layer.intermediate_size,), float(channel), dtype=torch.float64))
    return torch.cat(heads), torch.cat(channels)


def cost_aware_mask(
    scores: torch.Tensor,
    costs: torch.Tensor,
    keep: float,
    forced: torch.Tensor | None = None,
) -> torch.Tensor:
    """FLAP's global threshold: keep the highest scores whose summed ``costs`` come
    closest to ``keep`` of the total (0/1 float mask).

    Units in ``forced`` (bool) are kept first and counted. Of the rest, sorted by score,
    the kept prefix is the one whose cumulative cost is nearest the budget (FLAP's
    ``argmin |cumsum - budget|``; its ``metric > threshold`` then also drops the unit at
    the threshold, one unit fewer than the nearest prefix).
    """
    if scores.shape != costs.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and costs {tuple(costs.shape)} differ")
    costs = costs.double()
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    if forced is not None:
        mask |= forced.bool()
    budget = keep * float(costs.sum())
    rest = torch.nonzero(~mask).flatten()
    order = rest[torch.sort(scores[rest].double(), descending=True, stable=True).indices]
    base = costs[mask].sum().reshape(1)
    totals = torch.cat([base, base + torch.cumsum(costs[order], 0)])  # keep 0..n of the rest
    kept = int(torch.argmin((totals - budget).abs()))
    mask[order[:kept]] = True
    return mask.float()


def top_per_layer(scores: torch.Tensor, sizes: Sequence[int], minimum: int) -> torch.Tensor:
    """Bool mask of the ``minimum`` best units of every layer (all of a smaller layer)."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    start = 0
    for n in sizes:
        order = torch.sort(scores[start : start + n], descending=True, stable=True).indices
        mask[start + order[: min(minimum, n)]] = True
        start += n
    return mask


class _StopForward(Exception):
    """Raised after the layer being measured: the layers above it are not needed."""


def _stop(module, args, output):
    raise _StopForward


@torch.no_grad()
def collect_sequential_stats(
    model: torch.nn.Module,
    layers: list[PrunableLayer],
    batches: Sequence[torch.Tensor],
    decide: Callable[[int, ActivationStats], tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device | None = None,
    compensate: bool = False,
    reduce: Callable[[ActivationStats, int], None] | None = None,
    progress: bool = True,
) -> tuple[ActivationStats, torch.Tensor, torch.Tensor]:
    """Wanda's sequential calibration: layer i's statistics are taken with layers < i
    already pruned (and compensated, with ``compensate``), then ``decide(i, stats)``
    returns layer i's 0/1 head and channel masks. Returns the statistics and the flat
    masks. Each pass stops after layer i, so the cost is about (L+1)/2 full passes.

    ``reduce(stats, i)`` sums layer i's statistics over processes before the decision.
    """
    from hf_faithful.pruning.units import UnitMasks

    stats = empty_stats(layers)
    masks = UnitMasks(layers)
    heads = torch.ones(masks.num_heads)
    channels = torch.ones(masks.num_channels)
    h_start = c_start = 0
    tokens = sum(batch.numel() for batch in batches)
    for i, layer in enumerate(tqdm(layers, desc="sequential statistics", disable=not progress)):
        if compensate and i:
            stats.tokens = tokens
            masks.set_means(*stats.means())
        masks.set(heads, channels)
        handles = _stat_hooks(layer, stats, i)
        handles.append(layer.mlp.register_forward_hook(_stop))
        try:
            with masks.applied():
                for batch in batches:
                    try:
                        model(
                            input_ids=batch.to(device) if device is not None else batch,
                            use_cache=False,
                        )
                    except _StopForward:
                        pass
        finally:
            for handle in handles:
                handle.remove()
        stats.tokens = tokens
        if reduce is not None:
            reduce(stats, i)
        h, c = decide(i, stats)
        heads[h_start : h_start + layer.num_kv_heads] = h
        channels[c_start : c_start + layer.intermediate_size] = c
        h_start += layer.num_kv_heads
        c_start += layer.intermediate_size
    return stats, heads, channels


def transform_scores(
    metric: torch.Tensor,
    sizes: list[int],
    keep: float,
    transform: str = "sigmap",
    scale: float = 1.0,
) -> torch.Tensor:
    """Map a pool's metric to keep-probabilities with mean ``keep`` in every layer.

    ``sigmap``: ``z`` = per-layer standardized metric, ``s = clamp(sigmoid(scale * z) +
    keep - mean(sigmoid(scale * z)), 0, 1)`` (the paper's init has ``scale`` 1; a larger
    one starts closer to the metric's hard mask). ``norm``: per-layer min-max
    normalization in place of the sigmoid of the z-score (``scale`` unused).
    """
    if transform not in ("sigmap", "norm"):
        raise ValueError(f"init_transform must be 'sigmap' or 'norm', got {transform!r}")
    parts = []
    for part in metric.double().split(sizes):
        if transform == "sigmap":
            std = part.std() if part.numel() > 1 else part.new_tensor(0.0)
            z = (part - part.mean()) / std if std > 0 else torch.zeros_like(part)
            u = torch.sigmoid(scale * z)
        else:
            span = part.max() - part.min()
            u = (part - part.min()) / span if span > 0 else torch.full_like(part, 0.5)
        parts.append((u + (keep - u.mean())).clamp(0, 1))
    return torch.cat(parts).float()


def keep_count(n: int, keep: float) -> int:
    """Units kept out of ``n`` at keep ratio ``keep`` (round half up)."""
    return int(math.floor(keep * n + 0.5))


def check_head_budget(
    head_sizes: Sequence[int], sparsity: float, *, per_layer: bool, min_heads_per_layer: int
) -> None:
    """Raise early if ``min_heads_per_layer`` cannot hold at ``sparsity``."""
    if not per_layer:
        kept = keep_count(sum(head_sizes), 1.0 - sparsity)
        needed = min_heads_per_layer * len(head_sizes)
        if kept < needed:
            raise ValueError(
                f"sparsity={sparsity} keeps {kept} of {sum(head_sizes)} KV-head groups, "
                f"fewer than min_heads_per_layer={min_heads_per_layer} in each of "
                f"{len(head_sizes)} layers; lower the sparsity"
            )
    if any(n < min_heads_per_layer for n in head_sizes):
        raise ValueError(
            f"min_heads_per_layer={min_heads_per_layer} exceeds the KV heads of a layer "
            f"({min(head_sizes)})"
        )


class BudgetProjection:
    """Euclidean projection onto ``{p in [0,1]^N : sum p = budget}`` by bisection.

    The projection of ``s`` is ``clamp(s - tau, 0, 1)`` for the shift ``tau`` (of either
    sign) at which the sum equals the budget; the sum falls monotonically in ``tau``, so
    bisection finds it. The shift is applied to the raw scores: clamping first would
    move the breakpoints and give another point (``[1.3, .5, .5]`` at budget 1.5
    projects to ``[1, .25, .25]``, not ``[.83, .33, .33]``). One group per pool for a
    global budget, one per layer for a layer budget; work buffers are allocated once.
    """

    def __init__(self, sizes: list[int], per_layer: bool, iterations: int = 40):
        self.sizes = sizes
        self.per_layer = per_layer
        self.iterations = iterations
        groups = len(sizes) if per_layer else 1
        width = max(sizes) if per_layer else sum(sizes)
        # padded [groups, width] view; padding sits at -inf, which clamps to 0 for any shift
        self._padded = torch.full((groups, width), float("-inf"))
        self._work = torch.empty(groups, width)
        self._valid = torch.zeros(groups, width, dtype=torch.bool)
        self._index = None
        if per_layer and len(set(sizes)) > 1:
            rows = torch.repeat_interleave(torch.arange(groups), torch.tensor(sizes))
            cols = torch.cat([torch.arange(n) for n in sizes])
            self._index = (rows, cols)
            self._valid[self._index] = True
        else:
            self._valid.view(-1)[: sum(sizes)] = True

    @torch.no_grad()
    def __call__(self, s: torch.Tensor, keep: float) -> None:
        """Project ``s`` (flat, float32, CPU) in place for keep ratio ``keep``."""
        padded, work = self._padded, self._work
        if self._index is not None:
            padded[self._index] = s
        else:
            padded.view(-1)[: s.numel()].copy_(s)
        sizes = self.sizes if self.per_layer else [sum(self.sizes)]
        budget = torch.tensor([keep * n for n in sizes])
        # the sum is n at tau <= min(s) - 1 and 0 at tau >= max(s): the root lies between
        lo = padded.masked_fill(~self._valid, float("inf")).amin(1) - 1.0
        hi = padded.amax(1)
        for _ in range(self.iterations):
            mid = (lo + hi) / 2
            torch.sub(padded, mid[:, None], out=work)
            above = work.clamp_(0, 1).sum(1) > budget
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        # every entry strictly inside (0, 1) at the final bracket is free: solve its
        # linear piece exactly instead of keeping the bisection's last digit
        tau = (lo + hi) / 2
        torch.sub(padded, tau[:, None], out=work)
        free = (work > 0) & (work < 1)
        ones = (work >= 1).sum(1)
        count = free.sum(1)
        exact = (padded.where(free, 0.0).sum(1) + ones - budget) / count.clamp_min(1)
        tau = torch.where(count > 0, exact, tau)
        torch.sub(padded, tau[:, None], out=work)
        work.clamp_(0, 1)
        if self._index is not None:
            s.copy_(work[self._index])
        else:
            s.copy_(work.view(-1)[: s.numel()])


def hard_mask(
    scores: torch.Tensor,
    sizes: list[int],
    keep: float,
    *,
    per_layer: bool,
    min_per_layer: int = 0,
) -> torch.Tensor:
    """0/1 mask keeping the highest-scoring units: ``keep`` of the pool (global) or of
    every layer, and at least ``min_per_layer`` units in each layer."""
    mask = torch.zeros(scores.numel())
    parts = scores.float().split(sizes)
    offsets = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    if per_layer:
        for part, start, n in zip(parts, offsets, sizes):
            k = min(n, max(min_per_layer, keep_count(n, keep)))
            order = torch.sort(part, descending=True, stable=True).indices
            mask[start + order[:k]] = 1.0
        return mask
    total = keep_count(sum(sizes), keep)
    floor = sum(min(min_per_layer, n) for n in sizes)
    if total < floor:
        raise ValueError(
            f"keeping {total} of {sum(sizes)} units cannot leave {min_per_layer} in each of "
            f"{len(sizes)} layers: lower the sparsity or min_heads_per_layer"
        )
    for part, start, n in zip(parts, offsets, sizes):
        order = torch.sort(part, descending=True, stable=True).indices
        mask[start + order[: min(min_per_layer, n)]] = 1.0
    rest = scores.float().masked_fill(mask.bool(), float("-inf"))
    order = torch.sort(rest, descending=True, stable=True).indices
    mask[order[: total - floor]] = 1.0
    return mask

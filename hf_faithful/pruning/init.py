"""Initial keep-probabilities: a one-shot metric, a constant, or a saved prune state.

Separate from the pruner because each ``init`` is a pruner on its own (``fit`` with
``max_steps=0`` stops here): these functions take the model, its layers, the config
and tensors, and return scores, so the one-shot path needs no training state. The
pruner copies the result into its score vectors and projects it onto the budget.

Two one-shot structures decide hard masks here rather than through scores:
FLAP's cost-aware allocation (:func:`cost_allocation_masks`) and Wanda's sequential
calibration (:func:`sequential_stats`), where each layer's decision shapes the
statistics of the next.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hf_faithful.pruning.config import PruningConfig
from hf_faithful.pruning.distributed import all_reduce_sum, world_and_rank
from hf_faithful.pruning.scores import (
    ActivationStats,
    collect_activation_stats,
    collect_sequential_stats,
    cost_aware_mask,
    keep_count,
    layer_metrics,
    standardized_metrics,
    top_per_layer,
    transform_scores,
    unit_costs,
    unit_metrics,
)
from hf_faithful.pruning.state import load_prune_state
from hf_faithful.pruning.units import PrunableLayer

# Metrics that read activations, so ``initialize`` needs calibration data for them.
DATA_INITS = ("wanda_sp", "flap")


@torch.no_grad()
def activation_stats(
    model: torch.nn.Module,
    layers: Sequence[PrunableLayer],
    chunks: torch.Tensor,
    config: PruningConfig,
    device: torch.device,
    *,
    progress: bool = True,
) -> ActivationStats:
    """Activation sums over ``config.init_num_samples`` chunks, shared out over the ranks.

    The chunks are a seeded permutation's prefix, so every rank picks the same ones and
    the all-reduced sums equal a single process's.
    """
    chosen, batches = _calibration_batches(chunks, config)
    world, rank = world_and_rank()
    was_training = model.training
    model.eval()
    try:
        stats = collect_activation_stats(
            model, layers, batches, device=device, progress=progress and rank == 0
        )
    finally:
        model.train(was_training)
    if world > 1:
        all_reduce_sum(*stats.o_sum, *stats.o_sq, *stats.down_sum, *stats.down_sq)
        stats.tokens = chosen.numel()
    return stats


def _calibration_batches(
    chunks: torch.Tensor, config: PruningConfig
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The chosen chunks (a seeded permutation's prefix, the same on every rank) and
    this rank's share of their batches."""
    order = torch.randperm(chunks.shape[0], generator=torch.Generator().manual_seed(config.seed))
    chosen = chunks[order[: config.init_num_samples]]
    world, rank = world_and_rank()
    return chosen, list(chosen.split(config.batch_size))[rank::world]


@torch.no_grad()
def sequential_stats(
    model: torch.nn.Module,
    layers: Sequence[PrunableLayer],
    chunks: torch.Tensor,
    config: PruningConfig,
    device: torch.device,
    *,
    prune_heads: bool,
    prune_channels: bool,
    progress: bool = True,
) -> tuple[ActivationStats, torch.Tensor, torch.Tensor]:
    """Statistics and per-layer 0/1 masks from Wanda's sequential calibration: layer
    i keeps its ``1 - sparsity`` best units by ``config.init``'s metric, measured with
    layers < i already pruned (and compensated if ``config.compensate``)."""
    chosen, batches = _calibration_batches(chunks, config)
    world, rank = world_and_rank()
    keep = 1.0 - config.sparsity

    def reduce(stats: ActivationStats, i: int) -> None:
        if world > 1:
            all_reduce_sum(stats.o_sum[i], stats.o_sq[i], stats.down_sum[i], stats.down_sq[i])
            stats.tokens = chosen.numel()

    def decide(i: int, stats: ActivationStats) -> tuple[torch.Tensor, torch.Tensor]:
        layer = layers[i]
        heads, channels = layer_metrics(config.init, layer, stats, i)
        out = []
        for prune, metric, minimum in (
            (prune_heads, heads, config.min_heads_per_layer),
            (prune_channels, channels, 0),
        ):
            n = metric.numel()
            count = min(n, max(minimum, keep_count(n, keep))) if prune else n
            out.append(top_per_layer(metric, [n], count).float())
        return out[0], out[1]

    was_training = model.training
    model.eval()
    try:
        return collect_sequential_stats(
            model,
            list(layers),
            batches,
            decide,
            device=device,
            compensate=config.compensate,
            reduce=reduce,
            progress=progress and rank == 0,
        )
    finally:
        model.train(was_training)


def cost_allocation_masks(
    config: PruningConfig,
    layers: Sequence[PrunableLayer],
    head_sizes: Sequence[int],
    stats: ActivationStats | None,
    *,
    prune_heads: bool,
    prune_channels: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FLAP's adaptive structure search (AL-AM): standardized metrics of the pruned
    pools ranked together, kept above one threshold so that ``1 - sparsity`` of their
    parameters stay. At least ``min_heads_per_layer`` heads stay in every layer."""
    gen = torch.Generator().manual_seed(config.seed + 1)
    heads, channels = standardized_metrics(config.init, list(layers), stats, generator=gen)
    head_costs, channel_costs = unit_costs(layers)
    scores, costs, forced = [], [], []
    if prune_heads:
        scores.append(heads)
        costs.append(head_costs)
        forced.append(top_per_layer(heads, head_sizes, config.min_heads_per_layer))
    if prune_channels:
        scores.append(channels)
        costs.append(channel_costs)
        forced.append(torch.zeros(channels.numel(), dtype=torch.bool))
    mask = cost_aware_mask(
        torch.cat(scores), torch.cat(costs), 1.0 - config.sparsity, torch.cat(forced)
    )
    head_mask = mask[: heads.numel()] if prune_heads else torch.ones(heads.numel())
    channel_mask = mask[-channels.numel() :] if prune_channels else torch.ones(channels.numel())
    return head_mask, channel_mask


def state_scores(path: str, num_heads: int, num_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of a saved prune state (``init="state"``), checked against this model's units."""
    tensors, _ = load_prune_state(path)
    for name, count in (("scores_heads", num_heads), ("scores_channels", num_channels)):
        if name not in tensors or tensors[name].numel() != count:
            raise ValueError(
                f"init_state_path {path}: {name} does not match this model ({count} units)"
            )
    return tensors["scores_heads"], tensors["scores_channels"]


def initial_scores(
    config: PruningConfig,
    layers: Sequence[PrunableLayer],
    head_sizes: Sequence[int],
    channel_sizes: Sequence[int],
    keep: float,
    stats: ActivationStats | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head and channel scores from ``config.init``, before the budget projection.

    ``stats`` (from :func:`activation_stats`) is needed for the ``DATA_INITS``.
    """
    num_heads, num_channels = sum(head_sizes), sum(channel_sizes)
    if config.init == "state":
        return state_scores(config.init_state_path, num_heads, num_channels)
    if config.init == "constant":
        return torch.full((num_heads,), keep), torch.full((num_channels,), keep)
    gen = torch.Generator().manual_seed(config.seed + 1)
    heads, channels = unit_metrics(config.init, layers, stats, generator=gen)
    return (
        transform_scores(heads, head_sizes, keep, config.init_transform, config.init_scale),
        transform_scores(channels, channel_sizes, keep, config.init_transform, config.init_scale),
    )

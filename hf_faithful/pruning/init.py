"""Initial keep-probabilities: a one-shot metric, a constant, or a saved prune state.

Separate from the pruner because each ``init`` is a pruner on its own (``fit`` with
``max_steps=0`` stops here): these functions take the model, its layers, the config
and tensors, and return scores, so the one-shot path needs no training state. The
pruner copies the result into its score vectors and projects it onto the budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hf_faithful.pruning.config import PruningConfig
from hf_faithful.pruning.distributed import all_reduce_sum, world_and_rank
from hf_faithful.pruning.scores import (
    ActivationStats,
    collect_activation_stats,
    transform_scores,
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
    order = torch.randperm(chunks.shape[0], generator=torch.Generator().manual_seed(config.seed))
    chosen = chunks[order[: config.init_num_samples]]
    world, rank = world_and_rank()
    batches = list(chosen.split(config.batch_size))[rank::world]
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
        transform_scores(heads, head_sizes, keep, config.init_transform),
        transform_scores(channels, channel_sizes, keep, config.init_transform),
    )

"""How the pruner shares work under ``accelerate launch`` / ``torch.distributed``.

Processes split the K samples of a step (or the batch rows when K is not a multiple
of the number of processes) and the activation-statistics batches, then sum with
all-reduce, so every process applies the same update to the same scores. With no
initialized process group every helper is the single-process identity.
"""

from __future__ import annotations

import torch


def world_and_rank() -> tuple[int, int]:
    """``(world_size, rank)`` of the initialized process group, else ``(1, 0)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def reduce_device(model_device: torch.device) -> torch.device:
    """Where tensors to all-reduce live: the model's device under NCCL, else the CPU."""
    world, _ = world_and_rank()
    if world > 1 and torch.distributed.get_backend() == "nccl":
        return model_device
    return torch.device("cpu")


def split_samples(
    num_samples: int, batch: torch.Tensor, world: int, rank: int
) -> tuple[range, torch.Tensor]:
    """This rank's share of a step: (sample indices, batch rows)."""
    if world > 1 and num_samples % world == 0:
        return range(rank, num_samples, world), batch
    return range(num_samples), batch.tensor_split(world)[rank]


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over the processes, in place (a no-op for one process)."""
    if world_and_rank()[0] > 1:
        for t in tensors:
            torch.distributed.all_reduce(t)

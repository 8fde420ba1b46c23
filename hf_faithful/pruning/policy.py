"""One policy-gradient step as small pure functions: sample, baseline, estimator.

The policy is a vector ``s`` of keep-probabilities, one per prunable unit. A step
draws K Bernoulli masks ``m_k ~ Bernoulli(s)``, measures a loss ``L_k`` per mask, and
estimates the gradient of ``E[L]`` with the score function (REINFORCE) and a
moving-average baseline ``delta`` (arXiv 2406.10576, Eq. 5-7):

    delta <- (1 - 1/w) delta + (1/w) mean_k L_k            (the first step: mean_k L_k)
    g      = 1/(K-1) sum_k (L_k - delta)(m_k - s) / d(s)
    d(s)   = s(1-s) ("reinforce": the Bernoulli score)  or  sqrt(s(1-s)) ("sqrt")

plus ``lambda * (log(1-s) - log s)`` for the optional entropy penalty. Nothing here
touches a model: the pruner runs the forward passes and the optimizer.
The functions take optional ``out`` / ``work`` buffers so that a step over millions
of units allocates nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

EPS = 1e-6


@dataclass
class StepBuffers:
    """Preallocated per-step tensors, so a step over millions of units allocates nothing."""

    heads: torch.Tensor  # [K, num_heads] sampled masks
    channels: torch.Tensor  # [K, num_channels]
    work_heads: torch.Tensor
    work_channels: torch.Tensor
    sums: torch.Tensor  # [K, 2]: summed token loss, token count

    @classmethod
    def allocate(
        cls, k: int, num_heads: int, num_channels: int, device: torch.device
    ) -> StepBuffers:
        """Masks and work on the CPU (where the scores live); the loss sums on ``device``,
        where they are all-reduced."""
        return cls(
            heads=torch.empty(k, num_heads),
            channels=torch.empty(k, num_channels),
            work_heads=torch.empty(num_heads),
            work_channels=torch.empty(num_channels),
            sums=torch.zeros(k, 2, dtype=torch.float64, device=device),
        )


def sample_masks(
    scores: torch.Tensor,
    num_samples: int,
    generator: torch.Generator | None = None,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[num_samples, n]`` Bernoulli masks drawn with keep-probabilities ``scores``."""
    if out is None:
        out = torch.empty(num_samples, scores.numel(), dtype=scores.dtype)
    return out.bernoulli_(scores.expand(num_samples, -1), generator=generator)


@torch.no_grad()
def enforce_min_per_layer(
    masks: torch.Tensor, scores: torch.Tensor, sizes: Sequence[int], minimum: int
) -> torch.Tensor:
    """Where a sample keeps fewer than ``minimum`` units of a layer, switch on the
    layer's ``minimum`` most probable ones (in place; returns ``masks``).

    The policy then only explores architectures the hard mask (which keeps that many
    per layer) can produce.
    """
    if minimum <= 0:
        return masks
    for part, layer_scores in zip(masks.split(list(sizes), dim=1), scores.split(list(sizes))):
        short = part.sum(1) < minimum
        if bool(short.any()):
            top = torch.topk(layer_scores, minimum, sorted=False).indices
            part[short.nonzero()[:, None], top] = 1.0
    return masks


def mean_token_losses(sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean token loss from ``sums[k] = (summed loss, token count)``, on the
    CPU, and the mask of finite ones (NaN/inf samples are left out of the step)."""
    losses = (sums[:, 0] / sums[:, 1].clamp_min(1)).cpu()
    return losses, torch.isfinite(losses)


def update_baseline(baseline: float | None, mean_loss: float, window: int) -> float:
    """Moving-average baseline: ``(1 - 1/w) delta + mean_loss / w``; starts at ``mean_loss``."""
    if baseline is None:
        return mean_loss
    return (1 - 1 / window) * baseline + mean_loss / window


@torch.no_grad()
def policy_gradient(
    scores: torch.Tensor,
    masks: torch.Tensor,
    losses: torch.Tensor,
    valid: torch.Tensor,
    baseline: float,
    *,
    estimator: str = "sqrt",
    entropy_weight: float = 0.0,
    out: torch.Tensor | None = None,
    work: torch.Tensor | None = None,
) -> torch.Tensor:
    """``g = 1/(K-1) sum_k (L_k - delta)(m_k - s) / d(s)`` (+ entropy) over the samples
    where ``valid`` holds; K counts those samples. Returns ``out`` (the gradient)."""
    if estimator not in ("sqrt", "reinforce"):
        raise ValueError(f"estimator must be 'sqrt' or 'reinforce', got {estimator!r}")
    grad = torch.zeros_like(scores) if out is None else out.zero_()
    work = torch.empty_like(scores) if work is None else work
    n_valid = int(valid.sum())
    for k in torch.nonzero(valid).flatten().tolist():
        torch.sub(masks[k], scores, out=work)
        grad.add_(work, alpha=float(losses[k]) - baseline)
    grad.div_(max(n_valid - 1, 1))
    torch.mul(scores, 1 - scores, out=work)
    work.clamp_(min=EPS)
    if estimator == "sqrt":
        work.sqrt_()
    grad.div_(work)
    if entropy_weight:
        s = scores.clamp(EPS, 1 - EPS)
        grad.add_(torch.log1p(-s) - torch.log(s), alpha=entropy_weight)
    return grad

"""policy.py: sampling, baseline and the score-function estimator, by hand."""

from __future__ import annotations

import pytest
import torch

from hf_faithful.pruning.policy import (
    enforce_min_per_layer,
    mean_token_losses,
    policy_gradient,
    sample_masks,
    update_baseline,
)


@pytest.mark.parametrize(
    "estimator, expected", [("sqrt", [1.0, -1.25]), ("reinforce", [2.0, -3.125])]
)
def test_estimator_hand_computed(estimator, expected):
    # s = (0.5, 0.8), baseline 1.5, finite samples: L=2 with m=(1,0), L=1 with m=(0,1)
    # sum_k (L_k - b)(m_k - s) = 0.5*(0.5,-0.8) + (-0.5)*(-0.5,0.2) = (0.5, -0.5); / (K-1)=1
    # sqrt: / sqrt(s(1-s)) = / (0.5, 0.4) -> (1.0, -1.25); reinforce: / (0.25, 0.16)
    scores = torch.tensor([0.5, 0.8])
    masks = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    losses = torch.tensor([2.0, 1.0, float("nan")], dtype=torch.float64)
    grad = policy_gradient(scores, masks, losses, torch.isfinite(losses), 1.5, estimator=estimator)
    torch.testing.assert_close(grad, torch.tensor(expected))
    out, work = torch.full((2,), 7.0), torch.empty(2)  # buffers: overwritten, not added to
    assert (
        policy_gradient(
            scores,
            masks,
            losses,
            torch.isfinite(losses),
            1.5,
            estimator=estimator,
            out=out,
            work=work,
        )
        is out
    )
    torch.testing.assert_close(out, torch.tensor(expected))


def test_entropy_term_hand_computed():
    # equal losses and baseline: only lambda * (log(1-s) - log s) remains
    scores = torch.tensor([0.5, 0.8])
    masks = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    losses = torch.tensor([1.0, 1.0], dtype=torch.float64)
    grad = policy_gradient(scores, masks, losses, torch.isfinite(losses), 1.0, entropy_weight=0.5)
    torch.testing.assert_close(
        grad, torch.tensor([0.0, 0.5 * (torch.log(torch.tensor(0.2 / 0.8)))])
    )
    with pytest.raises(ValueError, match="estimator"):
        policy_gradient(scores, masks, losses, torch.isfinite(losses), 1.0, estimator="adam")


def test_moving_average_baseline():
    assert update_baseline(None, 3.0, window=5) == 3.0  # the first step starts it
    assert update_baseline(3.0, 8.0, window=5) == pytest.approx(0.8 * 3.0 + 8.0 / 5)  # 4.0
    assert update_baseline(4.0, 4.0, window=1) == 4.0


def test_mean_token_losses_skips_non_finite():
    sums = torch.tensor([[6.0, 3.0], [float("nan"), 2.0], [5.0, 0.0]], dtype=torch.float64)
    losses, valid = mean_token_losses(sums)
    assert losses[0].item() == 2.0 and losses[2].item() == 5.0  # no tokens: count clamped to 1
    assert valid.tolist() == [True, False, True]


def test_sample_masks_follow_the_probabilities():
    scores = torch.tensor([0.0, 1.0, 0.5])
    masks = sample_masks(scores, 4000, torch.Generator().manual_seed(0))
    assert masks.shape == (4000, 3)
    assert masks[:, 0].sum() == 0 and masks[:, 1].sum() == 4000
    assert abs(masks[:, 2].mean().item() - 0.5) < 0.03
    again = sample_masks(scores, 4000, torch.Generator().manual_seed(0), out=torch.empty(4000, 3))
    assert torch.equal(masks, again)  # the generator alone decides the draw


def test_enforce_min_per_layer_switches_on_the_most_probable():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.2, 0.3, 0.8])  # two layers of three units
    masks = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    enforce_min_per_layer(masks, scores, [3, 3], minimum=2)
    # sample 0: layer 0 had one unit -> top-2 (units 1, 2) on; layer 1 had two: unchanged
    # sample 1: layer 0 fine; layer 1 had none -> units 4, 5 (0.3, 0.8) on
    assert masks.tolist() == [[0, 1, 1, 1, 1, 0], [1, 1, 0, 0, 1, 1]]
    before = masks.clone()
    assert torch.equal(enforce_min_per_layer(masks, scores, [3, 3], minimum=0), before)

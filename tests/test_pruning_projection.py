"""The budget projection is the exact Euclidean projection onto
{p in [0,1]^n : sum p = budget} (issue 14, 5d), checked against a sort-based exact
algorithm and a generic quadratic-programming solver."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from hf_faithful.pruning.scores import BudgetProjection

torch.set_num_threads(1)


def _exact(s: np.ndarray, budget: float) -> np.ndarray:
    """Sort-based reference: sum(clip(s - tau, 0, 1)) is piecewise linear in tau with
    breakpoints at s_i and s_i - 1; find the piece holding the budget, solve it."""
    s = s.astype(np.float64)
    if budget >= s.size:
        return np.ones_like(s)
    if budget <= 0:
        return np.zeros_like(s)
    points = np.sort(np.concatenate([s, s - 1.0]))
    sums = np.array([np.clip(s - t, 0, 1).sum() for t in points])  # non-increasing
    k = np.nonzero(sums <= budget)[0][0]  # first breakpoint at or under the budget
    lo, hi = points[k - 1], points[k]
    tau = lo + (sums[k - 1] - budget) / (sums[k - 1] - sums[k]) * (hi - lo)
    return np.clip(s - tau, 0, 1)


def _qp(s: np.ndarray, budget: float) -> np.ndarray:
    """The projection as a plain QP, solved by SLSQP (no knowledge of its form)."""
    s = s.astype(np.float64)
    result = minimize(
        lambda p: 0.5 * np.sum((p - s) ** 2),
        x0=np.full_like(s, budget / s.size),
        jac=lambda p: p - s,
        bounds=[(0.0, 1.0)] * s.size,
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - budget, "jac": np.ones_like}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert result.success, result.message
    return result.x


def _project(s: torch.Tensor, sizes: list[int], keep: float, per_layer: bool) -> np.ndarray:
    out = s.clone()
    BudgetProjection(sizes, per_layer=per_layer)(out, keep)
    return out.double().numpy()


def test_no_clamp_before_the_shift():
    s = torch.tensor([1.3, 0.5, 0.5])
    out = _project(s, [3], keep=0.5, per_layer=False)  # budget 1.5
    np.testing.assert_allclose(out, [1.0, 0.25, 0.25], atol=1e-6)  # not [.83, .33, .33]
    np.testing.assert_allclose(_exact(s.numpy(), 1.5), [1.0, 0.25, 0.25], atol=1e-12)


def test_under_budget_scores_are_raised_to_it():
    s = torch.tensor([0.1, 0.2, -0.5, 0.9])
    out = _project(s, [4], keep=0.5, per_layer=False)
    assert out.sum() == pytest.approx(2.0, abs=1e-6)
    np.testing.assert_allclose(out, _exact(s.numpy(), 2.0), atol=1e-6)


@pytest.mark.parametrize("seed", range(20))
def test_global_budget_matches_the_exact_projection(seed):
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 200, (1,), generator=gen))
    spread = float(torch.rand(1, generator=gen)) * 3
    s = (torch.rand(n, generator=gen) - 0.3) * spread + 0.2
    keep = float(torch.rand(1, generator=gen)) * 0.9 + 0.05
    out = _project(s, [n], keep, per_layer=False)
    np.testing.assert_allclose(out, _exact(s.numpy(), keep * n), atol=1e-5)
    assert out.sum() == pytest.approx(keep * n, abs=1e-4)


@pytest.mark.parametrize("seed", range(10))
def test_layer_budget_matches_the_exact_projection_per_layer(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    sizes = torch.randint(1, 40, (int(torch.randint(2, 6, (1,), generator=gen)),), generator=gen)
    sizes = sizes.tolist()
    s = torch.randn(sum(sizes), generator=gen) * 0.8 + 0.5
    keep = float(torch.rand(1, generator=gen)) * 0.9 + 0.05
    out = _project(s, sizes, keep, per_layer=True)
    expected = np.concatenate([_exact(part.numpy(), keep * len(part)) for part in s.split(sizes)])
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_a_generic_qp_solver(seed):
    gen = torch.Generator().manual_seed(200 + seed)
    s = torch.randn(12, generator=gen) * 0.7 + 0.4
    out = _project(s, [12], keep=0.4, per_layer=False)
    np.testing.assert_allclose(out, _qp(s.numpy(), 0.4 * 12), atol=1e-5)


def test_extreme_budgets():
    s = torch.tensor([3.0, -2.0, 0.4, 0.6])
    np.testing.assert_allclose(_project(s, [4], 1.0, per_layer=False), np.ones(4), atol=1e-6)
    np.testing.assert_allclose(_project(s, [4], 0.0, per_layer=False), np.zeros(4), atol=1e-6)

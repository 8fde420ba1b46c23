"""ATE, bootstrap intervals and the exact McNemar test against hand-computed values."""

import math

import numpy as np
import pytest

from hf_faithful.faithfulness.stats import (
    bootstrap_mean_ci,
    intervention_effects,
    mcnemar_exact,
    mean_score,
    paired_effect,
)


@pytest.mark.parametrize(
    ("lost", "gained", "p"),
    [
        (0, 0, 1.0),
        (0, 5, 2 / 32),  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
        (1, 4, 2 * 6 / 32),  # 2 * (1 + 5) / 32
        (4, 1, 2 * 6 / 32),
        (3, 3, 1.0),  # 2 * P(X <= 3) > 1 is capped
        (2, 10, 2 * (1 + 12 + 66) / 4096),
    ],
)
def test_mcnemar_exact_hand_computed(lost, gained, p):
    assert mcnemar_exact(lost, gained) == pytest.approx(p, rel=1e-12)


def test_paired_effect_hand_computed():
    baseline = [1, 1, 1, 1, 0, 0, 1, 1]
    intervened = [0, 1, 0, 0, 1, 0, 1, 0]
    effect = paired_effect(baseline, intervened, "V:noise", n_resamples=2000)
    assert effect.baseline_accuracy == 6 / 8
    assert effect.intervened_accuracy == 3 / 8
    assert effect.ate == pytest.approx(-3 / 8)
    assert (effect.n_lost, effect.n_gained) == (4, 1)
    assert effect.flipped == [0, 2, 3, 4, 7]
    assert effect.p_value == pytest.approx(2 * 6 / 32)
    assert effect.ci_low <= effect.ate <= effect.ci_high
    assert -1 <= effect.ci_low and effect.ci_high <= 1


def test_no_change_gives_a_degenerate_interval():
    effect = paired_effect([1, 0, 1], [1, 0, 1], n_resamples=100)
    assert (effect.ate, effect.ci_low, effect.ci_high, effect.p_value) == (0, 0, 0, 1.0)
    assert effect.flipped == []


def test_bootstrap_is_seeded_and_has_the_normal_width():
    rng = np.random.default_rng(1)
    values = (rng.random(400) < 0.3).astype(float)
    low, high = bootstrap_mean_ci(values, n_resamples=4000, seed=3)
    assert (low, high) == bootstrap_mean_ci(values, n_resamples=4000, seed=3)
    p = values.mean()
    half_width = 1.959964 * math.sqrt(p * (1 - p) / values.size)
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)
    assert low < p < high


def test_mean_score_leaves_out_none():
    score = mean_score([1.0, None, 0.0, 0.5], n_resamples=500)
    assert score.mean == 0.5 and score.n == 3 and score.n_missing == 1
    assert mean_score([None, None]).mean is None


def test_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        paired_effect([1, 0], [1])
    with pytest.raises(ValueError, match="booleans"):
        paired_effect([1, 2], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        paired_effect([], [])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_ci([1.0], confidence=1.5)


def test_intervention_effects_picks_ate_t_and_ate_v():
    base = [True, True, False, True]
    result = intervention_effects(
        base,
        {"T:offline": [False, True, False, True], "V:blank": [True, False, False, False]},
        n_resamples=200,
    )
    assert list(result.effects) == ["T:offline", "V:blank"]
    assert result.ate_t is result.effects["T:offline"] and result.ate_t.ate == -0.25
    assert result.ate_v is result.effects["V:blank"] and result.ate_v.ate == -0.5
    assert result.ate_v.flipped == [1, 3]
    assert intervention_effects(base, {}).ate_t is None

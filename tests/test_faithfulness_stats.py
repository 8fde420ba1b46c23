"""ATE, bootstrap intervals and the exact McNemar test against hand-computed values."""

import math

import numpy as np
import pytest

from hf_faithful.faithfulness.stats import (
    bootstrap_mean_ci,
    intervention_effects,
    mcnemar_exact,
    mean_score,
    newcombe_paired_interval,
    paired_effect,
    wilson_interval,
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


Z = 1.959963984540054  # the 97.5% normal quantile


def _wilson(x: int, n: int) -> tuple[float, float]:
    """Wilson's interval in its closed form (2np + z^2 -+ z sqrt(z^2 + 4npq)) / 2(n + z^2),
    written independently of the centre-and-half-width form in stats.py."""
    p = x / n
    root = Z * math.sqrt(Z * Z + 4 * n * p * (1 - p))
    return (2 * n * p + Z * Z - root) / (2 * (n + Z * Z)), (2 * n * p + Z * Z + root) / (
        2 * (n + Z * Z)
    )


def test_no_change_gives_an_interval_of_honest_width():
    # was (0, 0, 0, 1.0): a bootstrap of constant differences has zero width.
    # a=2 (both right), d=1 (both wrong), b=c=0, n=3: ad - bc = 2 > n/2, so
    # phi = (2 - 3/2) / sqrt((a+b)(c+d)(a+c)(b+d)) = 0.5 / sqrt(2*1*2*1) = 0.25;
    # p1 = p2 = 2/3, so low = -sqrt(x^2 - 2 phi x y + y^2), high = +sqrt(y^2 - 2 phi y x + x^2)
    effect = paired_effect([1, 0, 1], [1, 0, 1], n_resamples=100)
    assert (effect.ate, effect.p_value, effect.flipped) == (0, 1.0, [])
    low, high = _wilson(2, 3)
    x, y = 2 / 3 - low, high - 2 / 3
    half = math.sqrt(x * x - 2 * 0.25 * x * y + y * y)
    assert half > 0.4 and (effect.ci_low, effect.ci_high) == pytest.approx((-half, half))
    assert effect.interval == "Newcombe (1998) score interval, method 10"


@pytest.mark.parametrize(("n", "half"), [(8, 0.3244), (30, 0.1135), (100, 0.0370)])
def test_no_flips_interval_is_not_zero_width(n, half):
    # All right before and after: a margin is empty, so phi = 0; p1 = p2 = 1 and the Wilson
    # lower end of n/n is n / (n + z^2), hence the interval is +-z^2 / (n + z^2).
    # (The bootstrap gave [0, 0] for every n.)
    by_hand = Z * Z / (n + Z * Z)
    assert by_hand == pytest.approx(half, abs=5e-5)
    for flags in ([True] * n, [False] * n):
        effect = paired_effect(flags, flags)
        assert (effect.ci_low, effect.ci_high) == pytest.approx((-by_hand, by_hand), rel=1e-9)
    assert newcombe_paired_interval(30, 0, 0, 0) == pytest.approx((-0.1135, 0.1135), abs=1e-4)


def test_one_lost_pair_is_not_certain():
    # n = 1, right before, wrong after (the bootstrap said [-1, -1]). p1 = 0, p2 = 1,
    # phi = 0: low = -1 - sqrt(0 + 0) = -1; high = -1 + sqrt((1 - l2)^2 + u1^2) with
    # u1 = 1 - l2 = z^2 / (1 + z^2), i.e. -1 + sqrt(2) z^2 / (1 + z^2) = +0.122
    effect = paired_effect([True], [False])
    assert (effect.ate, effect.ci_low) == (-1.0, -1.0)
    assert effect.ci_high == pytest.approx(-1 + math.sqrt(2) * Z * Z / (1 + Z * Z))
    assert effect.ci_high == pytest.approx(0.1221, abs=1e-4)


def test_newcombe_with_negative_correlation_hand_computed():
    # a=36, b=12, c=2, d=0 (n=50): theta = (12 - 2) / 50 = 0.2,
    # p1 = 48/50, p2 = 38/50; ad - bc = -24 < 0, so phi = -24 / sqrt(48 * 2 * 38 * 12).
    p1, p2 = 48 / 50, 38 / 50
    l1, u1 = _wilson(48, 50)
    l2, u2 = _wilson(38, 50)
    phi = -24 / math.sqrt(48 * 2 * 38 * 12)
    low = 0.2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = 0.2 + math.sqrt((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    assert newcombe_paired_interval(36, 12, 2, 0) == pytest.approx((low, high), rel=1e-9)
    assert (low, high) == pytest.approx((0.0569, 0.3404), abs=1e-4)


def test_newcombe_phi_is_corrected_by_n_over_2():
    # a=15, d=15, no flips (n=30): ad - bc = 225 > 15, phi = (225 - 15) / 15^2 = 14/15;
    # p = 1/2 and the Wilson interval is symmetric: half = x sqrt(2 - 2 phi), x = p - l.
    low, _ = _wilson(15, 30)
    half = (0.5 - low) * math.sqrt(2 - 2 * 14 / 15)
    assert newcombe_paired_interval(15, 0, 0, 15) == pytest.approx((-half, half), rel=1e-9)
    assert half == pytest.approx(0.0615, abs=1e-4)


def _coverage(n: int, probs: tuple[float, float, float, float]) -> float:
    """Exact coverage: the probability, over every table of n pairs, that the interval
    holds the true difference probs[1] - probs[2]."""
    theta = probs[1] - probs[2]
    total = 0.0
    for a in range(n + 1):
        for b in range(n + 1 - a):
            for c in range(n + 1 - a - b):
                counts = (a, b, c, n - a - b - c)
                if any(k and not p for k, p in zip(counts, probs)):
                    continue
                pmf = math.factorial(n) / math.prod(math.factorial(k) for k in counts)
                pmf *= math.prod(p**k for p, k in zip(probs, counts))
                low, high = newcombe_paired_interval(*counts)
                total += pmf * (low <= theta <= high)
    return total


@pytest.mark.parametrize("probs", [(0.9, 0.02, 0.03, 0.05), (0.95, 0.0, 0.03, 0.02)])
def test_newcombe_covers_rare_flips(probs):
    # few discordant pairs, a true effect that is not 0: the bootstrap's [0, 0] misses it
    # whenever nothing flips (coverage about 0.56 for the first); the score interval holds it
    assert _coverage(30, probs) >= 0.95


def test_bad_counts():
    with pytest.raises(ValueError, match="no pairs"):
        newcombe_paired_interval(0, 0, 0, 0)
    with pytest.raises(ValueError, match="integers >= 0"):
        newcombe_paired_interval(1, -1, 0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(4, 3)


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


def test_intervention_effects_leave_out_the_unchanged_samples():
    # 4 samples the crops drive (right -> wrong under do(V)), 4 without crops (unchanged):
    # over all 8 the ATE is diluted to -0.5; over the 4 intervened on it is -1.
    base = [True] * 8
    after = [False] * 4 + [True] * 4
    diluted = intervention_effects(base, {"V:blank": after}).ate_v
    assert diluted.ate == -0.5 and diluted.n == 8
    changed = {"V:blank": [True] * 4 + [False] * 4, "T:offline": [False] * 8}
    result = intervention_effects(base, {"V:blank": after, "T:offline": base}, changed=changed)
    effect = result.ate_v
    assert (effect.ate, effect.n, effect.n_unchanged) == (-1.0, 4, 4)
    assert effect.flipped == [0, 1, 2, 3] and effect.p_value == pytest.approx(2 / 2**4)
    assert result.ate_t is None and result.unchanged == ["T:offline"]
    # flipped indices refer to the full sequence, not the kept subset
    mixed = intervention_effects(
        base, {"V:x": [True, False, True, False] * 2}, changed={"V:x": [False, True] * 4}
    ).ate_v
    assert mixed.flipped == [1, 3, 5, 7] and mixed.ate == -1.0
    with pytest.raises(ValueError, match="not in intervened"):
        intervention_effects(base, {"V:blank": after}, changed={"V:other": [True] * 8})
    with pytest.raises(ValueError, match="has 3 values"):
        intervention_effects(base, {"V:blank": after}, changed={"V:blank": [True] * 3})

"""Effects of an intervention on accuracy, with error bars.

``ATE = E[correct | do(intervention)] - E[correct | no intervention]`` over the same
samples. Its interval is Newcombe's score interval for a difference of paired
proportions (Newcombe 1998, method 10, built from two Wilson score intervals), its
p-value the exact McNemar test on the discordant pairs: "the crops are ignored" becomes a
claim with an error bar. A paired bootstrap is not used for the ATE: when no answer flips
every resample has the same difference, so it reports a zero-width interval ([0, 0] for
any n, [-1, -1] for one lost pair), claiming certainty the data cannot give; the score
interval stays honest with no discordant pair and small n.

Only the samples an intervention actually changed are paired (``changed``): a trace
without crops is not intervened on by ``do(V)`` and would otherwise dilute ATE_V towards
0. Means of judge scores keep a percentile bootstrap (fixed seed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import binom, norm

__all__ = [
    "INTERVAL_METHOD",
    "Effect",
    "InterventionEffects",
    "MeanScore",
    "bootstrap_mean_ci",
    "intervention_effects",
    "mcnemar_exact",
    "mean_score",
    "newcombe_paired_interval",
    "paired_effect",
    "wilson_interval",
]

INTERVAL_METHOD = "Newcombe (1998) score interval, method 10"

# Resampled means are computed in chunks of at most this many indices (memory bound).
_CHUNK = 4_000_000


@dataclass
class MeanScore:
    """A mean with its bootstrap interval; ``n_missing`` values were None and left out."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_missing: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Effect:
    """Paired effect of one intervention on accuracy.

    ``n``: the pairs the effect is estimated on (the samples the intervention changed);
    ``n_unchanged``: samples left out because the intervention left them as they were.
    ``n_lost``: correct before, wrong after; ``n_gained``: wrong before, correct after;
    ``flipped``: indices of the samples whose correctness changed (indices into the
    sequences given, left-out samples included). ``interval`` names the interval method.
    """

    name: str
    n: int
    baseline_accuracy: float
    intervened_accuracy: float
    ate: float
    ci_low: float
    ci_high: float
    p_value: float
    n_lost: int
    n_gained: int
    flipped: list[int] = field(default_factory=list)
    confidence: float = 0.95
    n_unchanged: int = 0
    interval: str = INTERVAL_METHOD

    def to_dict(self) -> dict:
        return asdict(self)


def _as_bool_array(values: Sequence[bool], name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of booleans, got shape {array.shape}")
    if array.size and not np.isin(array, [0, 1, True, False]).all():
        raise ValueError(f"{name} must hold booleans (or 0/1)")
    return array.astype(np.float64)


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap_mean_ci(
    values: Sequence[float], n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (fixed ``seed``)."""
    _check_bootstrap(n_resamples, confidence)
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("values is empty: no interval for the mean of nothing")
    rng = np.random.default_rng(seed)
    n = array.size
    rows = max(1, _CHUNK // n)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, rows):
        stop = min(start + rows, n_resamples)
        means[start:stop] = array[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def mcnemar_exact(n_lost: int, n_gained: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of the discordant pairs at 1/2."""
    if n_lost < 0 or n_gained < 0:
        raise ValueError(f"counts must be >= 0, got {n_lost}, {n_gained}")
    n = n_lost + n_gained
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(n_lost, n_gained), n, 0.5)))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion: inside [0, 1] and never zero-width,
    even at 0 or n successes (the building block of Newcombe's paired interval)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    # exact ends at 0 and n successes (the formula gives them up to rounding)
    low = 0.0 if successes == 0 else (centre - half) / scale
    high = 1.0 if successes == n else (centre + half) / scale
    return low, high


def newcombe_paired_interval(
    a: int, b: int, c: int, d: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Interval of ``p1 - p2 = (b - c) / n`` for paired binary outcomes, Newcombe (1998),
    "Improved confidence intervals for the difference between binomial proportions based on
    paired data", Stat. Med. 17:2635-2650, method 10.

    ``a``: both positive, ``b``: first positive only, ``c``: second positive only, ``d``:
    neither (``p1 = (a + b) / n``, ``p2 = (a + c) / n``). The Wilson intervals ``(l1, u1)``
    of ``p1`` and ``(l2, u2)`` of ``p2`` are combined with the correlation ``phi`` of the
    pairs::

        low  = theta - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        high = theta + sqrt((p2 - l2)^2 - 2 phi (p2 - l2)(u1 - p1) + (u1 - p1)^2)

    with ``phi = (ad - bc - n/2) / sqrt((a+b)(c+d)(a+c)(b+d))`` when ``ad - bc > n/2``,
    ``0`` when ``0 <= ad - bc <= n/2`` or a margin is empty, ``(ad - bc) / sqrt(...)`` when
    ``ad < bc``.
    """
    counts = (a, b, c, d)
    if any(int(x) != x or x < 0 for x in counts):
        raise ValueError(f"counts must be integers >= 0, got {counts}")
    a, b, c, d = (int(x) for x in counts)
    n = a + b + c + d
    if n == 0:
        raise ValueError("no pairs: a + b + c + d is 0")
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)
    else:
        phi = cross / math.sqrt(margins)
    theta = p1 - p2
    below = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    above = (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2
    low = theta - math.sqrt(max(below, 0.0))
    high = theta + math.sqrt(max(above, 0.0))
    return max(-1.0, low), min(1.0, high)


def paired_effect(
    baseline: Sequence[bool],
    intervened: Sequence[bool],
    name: str = "effect",
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Effect:
    """ATE of an intervention from per-sample correctness before and after it (same order),
    with Newcombe's paired score interval and the exact McNemar p-value.

    ``n_resamples`` and ``seed`` are accepted for callers written for the former bootstrap
    interval; the interval is closed-form and uses neither.
    """
    _check_bootstrap(n_resamples, confidence)
    before = _as_bool_array(baseline, "baseline")
    after = _as_bool_array(intervened, "intervened")
    if before.size != after.size:
        raise ValueError(
            f"baseline and intervened must have the same length, got {before.size} and {after.size}"
        )
    if before.size == 0:
        raise ValueError("no samples: baseline and intervened are empty")
    diff = after - before
    n_lost, n_gained = int((diff < 0).sum()), int((diff > 0).sum())
    n_both = int(((before > 0) & (after > 0)).sum())
    n_neither = int(before.size) - n_both - n_lost - n_gained
    # Newcombe's p1 is the intervened accuracy, p2 the baseline's: b = gained, c = lost
    low, high = newcombe_paired_interval(n_both, n_gained, n_lost, n_neither, confidence)
    return Effect(
        name=name,
        n=int(before.size),
        baseline_accuracy=float(before.mean()),
        intervened_accuracy=float(after.mean()),
        ate=float(diff.mean()),
        ci_low=low,
        ci_high=high,
        p_value=mcnemar_exact(n_lost, n_gained),
        n_lost=n_lost,
        n_gained=n_gained,
        flipped=[int(i) for i in np.flatnonzero(diff)],
        confidence=confidence,
    )


def mean_score(
    values: Sequence[float | None],
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> MeanScore:
    """Mean of per-sample scores with a bootstrap interval; None (unscored) values left out."""
    present = [float(v) for v in values if v is not None]
    missing = len(values) - len(present)
    if not present:
        return MeanScore(None, None, None, 0, missing)
    if not np.isfinite(present).all():
        raise ValueError("scores must be finite numbers or None")
    low, high = bootstrap_mean_ci(present, n_resamples, confidence, seed)
    return MeanScore(float(np.mean(present)), low, high, len(present), missing)


@dataclass
class InterventionEffects:
    """Paired effects of interventions on one baseline; ``ate_t`` / ``ate_v`` are the first
    textual (``"T:..."``) and visual (``"V:..."``) ones estimated; ``unchanged`` names the
    interventions that changed no sample (no effect can be estimated for them)."""

    effects: dict[str, Effect]
    ate_t: Effect | None
    ate_v: Effect | None
    unchanged: list[str] = field(default_factory=list)


def intervention_effects(
    baseline: Sequence[bool],
    intervened: Mapping[str, Sequence[bool]],
    *,
    changed: Mapping[str, Sequence[bool]] | None = None,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> InterventionEffects:
    """The effect core of the measurement: from per-sample correctness without and with
    each intervention (``{"T:offline": flags, "V:blank": flags, ...}``, same order as
    ``baseline``) to paired effects with intervals and p-values. The evaluator and the
    ``mcot_faithfulness`` metric both call it, so their ATEs cannot differ.

    ``changed`` (optional, per intervention, same order) says which samples the
    intervention actually changed; the others are left out of its effect, since a sample
    it did not touch (``do(V)`` on a trace without crops) is no intervention and would pull
    the ATE towards 0. Without it every sample counts as intervened (the metric's columns).
    ``n_resamples`` and ``seed`` are kept for existing callers (see :func:`paired_effect`).
    """
    base = _as_bool_array(baseline, "baseline")
    if base.size == 0 and intervened:
        raise ValueError("no samples: baseline is empty")
    changed = changed or {}
    unknown = set(changed) - set(intervened)
    if unknown:
        raise ValueError(f"changed names interventions not in intervened: {sorted(unknown)}")
    effects: dict[str, Effect] = {}
    unchanged: list[str] = []
    for name, flags in intervened.items():
        after = _as_bool_array(flags, name)
        if after.size != base.size:
            raise ValueError(
                f"{name} has {after.size} values, baseline has {base.size}: they must be paired"
            )
        mask = np.ones(base.size, dtype=bool)
        if name in changed:
            mask = _as_bool_array(changed[name], f"changed[{name!r}]").astype(bool)
            if mask.size != base.size:
                raise ValueError(
                    f"changed[{name!r}] has {mask.size} values, baseline has {base.size}"
                )
        kept = np.flatnonzero(mask)
        if kept.size == 0:
            unchanged.append(name)
            continue
        effect = paired_effect(
            base[kept], after[kept], name, n_resamples=n_resamples, confidence=confidence, seed=seed
        )
        effect.flipped = [int(kept[i]) for i in effect.flipped]
        effect.n_unchanged = int(base.size - kept.size)
        effects[name] = effect
    first = {
        kind: next((e for name, e in effects.items() if name.startswith(kind)), None)
        for kind in ("T:", "V:")
    }
    return InterventionEffects(effects, ate_t=first["T:"], ate_v=first["V:"], unchanged=unchanged)

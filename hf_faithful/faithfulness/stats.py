"""Effects of an intervention on accuracy, with error bars.

``ATE = E[correct | do(intervention)] - E[correct | no intervention]`` over the same
samples. Its interval is a paired percentile bootstrap (samples resampled together,
so the pairing is kept), its p-value the exact McNemar test on the discordant pairs:
"the crops are ignored" becomes a claim with an error bar. Seeds are fixed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import binom

__all__ = [
    "Effect",
    "InterventionEffects",
    "MeanScore",
    "bootstrap_mean_ci",
    "intervention_effects",
    "mcnemar_exact",
    "mean_score",
    "paired_effect",
]

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

    ``n_lost``: correct before, wrong after; ``n_gained``: wrong before, correct after;
    ``flipped``: indices of the samples whose correctness changed.
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


def paired_effect(
    baseline: Sequence[bool],
    intervened: Sequence[bool],
    name: str = "effect",
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Effect:
    """ATE of an intervention from per-sample correctness before and after it (same order)."""
    before = _as_bool_array(baseline, "baseline")
    after = _as_bool_array(intervened, "intervened")
    if before.size != after.size:
        raise ValueError(
            f"baseline and intervened must have the same length, got {before.size} and {after.size}"
        )
    if before.size == 0:
        raise ValueError("no samples: baseline and intervened are empty")
    diff = after - before
    low, high = bootstrap_mean_ci(diff, n_resamples, confidence, seed)
    n_lost, n_gained = int((diff < 0).sum()), int((diff > 0).sum())
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
    textual (``"T:..."``) and visual (``"V:..."``) ones."""

    effects: dict[str, Effect]
    ate_t: Effect | None
    ate_v: Effect | None


def intervention_effects(
    baseline: Sequence[bool],
    intervened: Mapping[str, Sequence[bool]],
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> InterventionEffects:
    """The effect core of the measurement: from per-sample correctness without and with
    each intervention (``{"T:offline": flags, "V:blank": flags, ...}``, same order as
    ``baseline``) to paired effects with intervals and p-values. The evaluator and the
    ``mcot_faithfulness`` metric both call it, so their ATEs cannot differ."""
    effects = {
        name: paired_effect(
            baseline, flags, name, n_resamples=n_resamples, confidence=confidence, seed=seed
        )
        for name, flags in intervened.items()
    }
    first = {
        kind: next((e for name, e in effects.items() if name.startswith(kind)), None)
        for kind in ("T:", "V:")
    }
    return InterventionEffects(effects, ate_t=first["T:"], ate_v=first["V:"])

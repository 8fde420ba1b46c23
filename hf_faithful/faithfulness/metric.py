"""Faithfulness metrics from per-sample columns: the logic behind the ``mcot_faithfulness``
evaluate module, usable without ``evaluate``.

Columns: the model's original answers and the references, optionally its answers after
``do(T)`` and after ``do(V)``, and judge scores (reliability, sufficiency; None for
unscored samples). Answers are matched with ``match`` (see
:mod:`hf_faithful.mcot.answers`); the effects come from
:func:`~hf_faithful.faithfulness.stats.intervention_effects`, the same core as
``FaithfulnessEvaluator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hf_faithful.faithfulness.stats import intervention_effects, mean_score
from hf_faithful.mcot.answers import AnswerMatcher, MatchMode, get_matcher, match_answers

__all__ = ["compute_faithfulness"]


def _check_column(name: str, values: Sequence[Any] | None, n: int) -> None:
    if values is not None and len(values) != n:
        raise ValueError(f"{name} has {len(values)} values, predictions has {n}")


def compute_faithfulness(
    predictions: Sequence[str | None],
    references: Sequence[str],
    textual_predictions: Sequence[str | None] | None = None,
    visual_predictions: Sequence[str | None] | None = None,
    reliability: Sequence[float | None] | None = None,
    sufficiency: Sequence[float | None] | None = None,
    *,
    match: MatchMode | AnswerMatcher = "exact",
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, ATE_T and ATE_V (paired bootstrap interval, exact McNemar p-value, flipped
    indices) and mean reliability / sufficiency (bootstrap interval), as a flat dict.

    ``ate_t = accuracy(textual_predictions) - accuracy(predictions)``, likewise ``ate_v``;
    keys of a missing column are absent. A None prediction counts as wrong.
    """
    n = len(predictions)
    if n == 0:
        raise ValueError("predictions is empty")
    _check_column("references", references, n)
    for name, column in (
        ("textual_predictions", textual_predictions),
        ("visual_predictions", visual_predictions),
        ("reliability", reliability),
        ("sufficiency", sufficiency),
    ):
        _check_column(name, column, n)
    matcher = get_matcher(match)
    stats = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    base = match_answers(predictions, references, matcher)
    accuracy = mean_score([float(c) for c in base], **stats)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": accuracy.mean,
        "accuracy_ci_low": accuracy.ci_low,
        "accuracy_ci_high": accuracy.ci_high,
    }
    intervened = {
        name: match_answers(column, references, matcher)
        for name, column in (("T:textual", textual_predictions), ("V:visual", visual_predictions))
        if column is not None
    }
    result = intervention_effects(base, intervened, **stats)
    for key, prefix, effect in (("t", "textual", result.ate_t), ("v", "visual", result.ate_v)):
        if effect is None:
            continue
        out |= {
            f"{prefix}_accuracy": effect.intervened_accuracy,
            f"ate_{key}": effect.ate,
            f"ate_{key}_ci_low": effect.ci_low,
            f"ate_{key}_ci_high": effect.ci_high,
            f"ate_{key}_p_value": effect.p_value,
            f"ate_{key}_flipped": effect.flipped,
        }
    for name, column in (("reliability", reliability), ("sufficiency", sufficiency)):
        if column is None:
            continue
        score = mean_score([None if v is None else float(v) for v in column], **stats)
        out |= {
            name: score.mean,
            f"{name}_ci_low": score.ci_low,
            f"{name}_ci_high": score.ci_high,
            f"{name}_n_scored": score.n,
        }
    return out

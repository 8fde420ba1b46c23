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

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

from hf_faithful.faithfulness.stats import intervention_effects, mean_score
from hf_faithful.mcot.answers import AnswerMatcher, MatchMode, get_matcher, match_answers

__all__ = ["ANSWER_COLUMNS", "SCORE_COLUMNS", "compute_faithfulness", "validate_columns"]

# The per-sample columns: answers (str, None = no answer) and judge scores (0..1, None).
ANSWER_COLUMNS = ("predictions", "references", "textual_predictions", "visual_predictions")
SCORE_COLUMNS = ("reliability", "sufficiency")


def _check_answer(name: str, index: int, value: Any) -> None:
    if value is None:
        if name == "references":
            raise ValueError(f"references[{index}] is None: every sample needs a reference")
        return
    if not isinstance(value, str):
        raise ValueError(f"{name}[{index}] must be a string or None, got {type(value).__name__}")
    if name == "references" and not value.strip():
        raise ValueError(f"references[{index}] is empty: every sample needs a reference")


def _check_score(name: str, index: int, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Real):
        raise ValueError(
            f"{name}[{index}] must be a number in [0, 1] or None, got {type(value).__name__}"
        )
    if math.isnan(value):
        raise ValueError(f"{name}[{index}] is NaN: use None for an unscored sample")
    if not 0 <= value <= 1:
        raise ValueError(
            f"{name}[{index}] = {value!r} is outside [0, 1]: judge scores are 0..1 "
            "(divide a 0-10 rating by 10)"
        )


def validate_columns(columns: Mapping[str, Sequence[Any] | None], *, start: int = 0) -> int:
    """Check per-sample columns (``ANSWER_COLUMNS`` + ``SCORE_COLUMNS`` by name; a missing
    or None optional column is absent) and return their length.

    Bad values are refused, not scored: a None or empty reference would make a sample
    count as wrong (or "" == "" as right), a 0-10 rating would be averaged as if 0..1.
    The ValueError names the column and the index (``start`` + position, for batches).
    """
    unknown = set(columns) - {*ANSWER_COLUMNS, *SCORE_COLUMNS}
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}")
    for name in ("predictions", "references"):
        if columns.get(name) is None:
            raise ValueError(f"{name} is required")
    for name, values in columns.items():
        if values is not None and (
            isinstance(values, str | bytes) or not hasattr(values, "__len__")
        ):
            raise ValueError(f"{name} must be a list, got {type(values).__name__}")
    n = len(columns["predictions"])
    for name, values in columns.items():
        if values is None:
            continue
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} values, predictions has {n}")
        check = _check_answer if name in ANSWER_COLUMNS else _check_score
        for i, value in enumerate(values):
            check(name, start + i, value)
    return n


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
    keys of a missing column are absent. A None or "" prediction (no answer) counts as
    wrong; bad values raise ValueError naming the column and index (see
    :func:`validate_columns`).
    """
    n = validate_columns(
        {
            "predictions": predictions,
            "references": references,
            "textual_predictions": textual_predictions,
            "visual_predictions": visual_predictions,
            "reliability": reliability,
            "sufficiency": sufficiency,
        }
    )
    if n == 0:
        raise ValueError("predictions is empty")
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

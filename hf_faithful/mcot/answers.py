"""Reading a final answer out of a model's reply and matching it against a reference.

Shared by the faithfulness measurement and the SCCM sufficiency reward, so both score
answers the same way. ``match`` is ``"exact"`` (normalized exact match: case,
punctuation, articles and whitespace ignored, numbers compared by value),
``"choice"`` (multiple-choice letter), or any ``callable(prediction, reference) -> bool``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from typing import Literal

__all__ = [
    "AnswerMatcher",
    "MatchMode",
    "answers_match",
    "exact_match",
    "extract_answer",
    "extract_choice",
    "get_matcher",
    "choice_match",
    "match_answers",
    "normalize_answer",
]

AnswerMatcher = Callable[[str, str], bool]
MatchMode = Literal["exact", "choice"]

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_NUMBER_RE = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
# "(B)", "B.", "B)", "B:", "option B", "answer is B", or a lone letter.
_CHOICE_PATTERNS = (
    re.compile(r"^\s*\(?([A-Z])\)?\s*$", re.I),
    re.compile(r"^\s*\(([A-Z])\)", re.I),
    re.compile(r"^\s*([A-Z])\s*[.):]", re.I),
    re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Z])\)?(?![A-Za-z])", re.I),
)


def extract_answer(text: str | None) -> str | None:
    """The final answer in a reply: the last ``<answer>...</answer>``, else the text after an
    unclosed ``<answer>``, else the last ``\\boxed{...}``; ``None`` when there is none."""
    if text is None:
        return None
    found = _ANSWER_RE.findall(text)
    if found:
        return found[-1].strip()
    lowered = text.lower()
    if "<answer>" in lowered:
        return text[lowered.rindex("<answer>") + len("<answer>") :].strip()
    boxed = _BOXED_RE.findall(text)
    if boxed:
        return boxed[-1].strip()
    return None


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().strip()
    if _NUMBER_RE.match(text.replace(",", "")):
        value = float(text.replace(",", ""))
        return str(int(value)) if value.is_integer() else repr(value)
    text = text.translate(_PUNCT)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    """Normalized exact match (see :func:`normalize_answer`)."""
    return normalize_answer(prediction) == normalize_answer(reference)


def extract_choice(text: str) -> str | None:
    """The multiple-choice letter in ``text`` ("B", "(B) red", "The answer is B."), or None."""
    for pattern in _CHOICE_PATTERNS:
        found = pattern.search(text.strip())
        if found:
            return found.group(1).upper()
    return None


def choice_match(prediction: str, reference: str) -> bool:
    """Same multiple-choice letter; falls back to exact match if either side has no letter."""
    pred, ref = extract_choice(prediction), extract_choice(reference)
    if pred is None or ref is None:
        return exact_match(prediction, reference)
    return pred == ref


_MATCHERS: dict[str, AnswerMatcher] = {"exact": exact_match, "choice": choice_match}


def get_matcher(match: MatchMode | AnswerMatcher = "exact") -> AnswerMatcher:
    """Resolve ``match`` (a mode name or a callable) to a ``(prediction, reference) -> bool``."""
    if callable(match):
        return match
    if match not in _MATCHERS:
        raise ValueError(f"match must be one of {sorted(_MATCHERS)} or a callable, got {match!r}")
    return _MATCHERS[match]


def answers_match(
    prediction: str | None, reference: str | None, match: MatchMode | AnswerMatcher = "exact"
) -> bool:
    """Whether ``prediction`` answers ``reference``; a missing prediction never matches."""
    if prediction is None or reference is None:
        return False
    return bool(get_matcher(match)(prediction, reference))


def match_answers(
    predictions: Sequence[str | None],
    references: Sequence[str | None],
    match: MatchMode | AnswerMatcher = "exact",
) -> list[bool]:
    """Per-sample correctness flags (see :func:`answers_match`), in order."""
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions has {len(predictions)} values, references has {len(references)}"
        )
    matcher = get_matcher(match)
    return [answers_match(p, r, matcher) for p, r in zip(predictions, references)]

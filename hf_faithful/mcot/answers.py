"""Reading a final answer out of a model's reply and matching it against a reference.

Shared by the faithfulness measurement and the SCCM sufficiency reward, so both score
answers the same way. ``match`` is ``"exact"`` (normalized exact match: case,
punctuation, articles and whitespace ignored, numbers compared by value),
``"choice"`` (multiple-choice letter), or any ``callable(prediction, reference) -> bool``.
"""

from __future__ import annotations

import re
import string
import warnings
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
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = str.maketrans("", "", string.punctuation)
_NUMBER_RE = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
# A letter is read as an option only where it stands as one, never as the article "a":
# alone ("B", "(B)", "B."), leading option text ("(B) red", "B. red", "B) red", "B: red"),
# right after "option" / "choice" ("option B is right"), or after "answer is" / "answer:"
# when bracketed or ending the phrase ("answer: B.", "answer is (b)", "answer is B because").
_CHOICE_PATTERNS = (
    re.compile(r"^\s*\(?([A-Z])\)?\s*[.!]?\s*$", re.I),
    re.compile(r"^\s*\(([A-Z])\)", re.I),
    re.compile(r"^\s*([A-Z])\s*[.):]", re.I),
    re.compile(r"\b(?:option|choice)\b\s*\(?([A-Z])\)?(?![A-Za-z])", re.I),
    re.compile(
        r"\b(?:answer|option|choice)\b(?:\s+is|\s*[:=])\s*"
        r"(?:\(([A-Z])\)|([A-Z])(?=\s*(?:$|[.,;:!?)\]])|\s+(?:because|since|as)\b|\s+[-\u2013\u2014]\s))",
        re.I,
    ),
)


def extract_answer(text: str | None) -> str | None:
    """The final answer in a reply: the first ``<answer>...</answer>`` (DeepEyes' rollouts
    stop at the first ``</answer>``; a warning says when there are several), else the text
    after an unclosed ``<answer>``, else the last ``\\boxed{...}``; ``None`` when there is none."""
    if text is None:
        return None
    found = _ANSWER_RE.findall(text)
    if found:
        if len(found) > 1:
            warnings.warn(
                f"reply has {len(found)} <answer> tags; the first is the answer (as in DeepEyes)",
                stacklevel=2,
            )
        return found[0].strip()
    lowered = text.lower()
    if "<answer>" in lowered:
        start = lowered.index("<answer>") + len("<answer>")
        end = lowered.find("<answer>", start)
        return text[start : end if end >= 0 else None].strip()
    boxed = _BOXED_RE.findall(text)
    if boxed:
        return boxed[-1].strip()
    return None


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization: lower case, no punctuation, no articles, single spaces.

    An answer made only of articles keeps them ("A" stays "a"): it is an answer (often an
    option letter), and dropping it would make it equal to an empty one."""
    text = text.lower().strip()
    if _NUMBER_RE.match(text.replace(",", "")):
        value = float(text.replace(",", ""))
        return str(int(value)) if value.is_integer() else repr(value)
    words = text.translate(_PUNCT).split()
    return " ".join([w for w in words if w not in _ARTICLES] or words)


def exact_match(prediction: str, reference: str) -> bool:
    """Normalized exact match (see :func:`normalize_answer`); an answer that normalizes to
    nothing ("", ".") matches nothing, not even another empty one."""
    normalized = normalize_answer(prediction)
    return bool(normalized) and normalized == normalize_answer(reference)


def extract_choice(text: str) -> str | None:
    """The multiple-choice letter in ``text`` ("B", "(B) red", "The answer is B."), or None;
    a letter that reads as a word ("The answer is a dog.") is not an option."""
    for pattern in _CHOICE_PATTERNS:
        found = pattern.search(text.strip())
        if found:
            return next(g for g in found.groups() if g).upper()
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

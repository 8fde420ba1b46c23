"""LVLM-judge metrics of the visual components (crops) of a trace.

* Reliability: a judge sees the full image, the crops, the question and the model's
  answer, and rates 0-10 whether the crops are the right evidence and agree with the
  answer (scaled to 0-1).
* Sufficiency: the judge sees only the crops and the question (no full image, no
  reasoning) and answers; the score is 1 if that answer matches the reference (the
  trace's own answer when there is no reference), else 0.
* Validation (:meth:`FaithfulnessJudge.grade`): the judge says whether an answer is right
  given the reference, so its verdicts can be compared with exact match or human labels:
  a judge that cannot grade an answer cannot be trusted to grade crops either.

The judge is any :class:`~hf_faithful.mcot.backends.AnswerBackend` (a local
VLM or an OpenAI-compatible endpoint); the prompts are the shipped ones unless given.
A trace without crops, or a reply with no readable score, scores None and is left out
of the means (and counted).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hf_faithful.faithfulness.prompts import load_prompt
from hf_faithful.mcot.answers import AnswerMatcher, MatchMode, answers_match
from hf_faithful.mcot.backends import AnswerBackend
from hf_faithful.mcot.messages import answer_from_reply, sufficiency_query
from hf_faithful.mcot.trace import Trace

__all__ = ["FaithfulnessJudge", "JudgeResult", "parse_score", "read_score"]

_NUMBER = r"[-+\u2212]?(?:\d+(?:\.\d+)?|\.\d+)"
_OUT_OF = rf"\s*(?:/|\bout\s+of\b)\s*({_NUMBER})"
# "Score: 7", "**Score**: 7/10", "score = 0.5", "the score is 8 out of 10", "Rating: -3"
_LABELED_RE = re.compile(
    rf"\b(?:score|rating)\b[\s*_:='\"]*(?:(?:is|of|was)\b[\s*_:=]*)?({_NUMBER})(?:{_OUT_OF})?",
    re.I,
)
# "9/10", "8 out of 10": a fraction over the scale is a rating even without a label
_FRACTION_RE = re.compile(rf"(?<![\w.])({_NUMBER}){_OUT_OF}(?![\w.]*\d)", re.I)
# the whole reply is the number ("7", "**7**.", "-3")
_LONE_RE = re.compile(rf"^[\s*_`\"']*({_NUMBER})[\s*_`\"'.!]*$")
_YES_NO_RE = re.compile(r"\W*(yes|no)\b", re.I)


def _number(text: str) -> float:
    return float(text.replace("\u2212", "-"))


def _check_scale(scale: float) -> None:
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")


def read_score(reply: str, scale: float = 10.0) -> float:
    """A judge's 0..``scale`` rating as 0..1, or ValueError saying why the reply holds none.

    Reads ``{"score": 7}``, a number after a "score"/"rating" label (decimals and signs,
    the unicode minus included: ``Score: 7``, ``score = 6.5``, ``Rating: 7/10``), a
    fraction over the scale (``9/10``, ``8 out of 10``), a reply that is only a number,
    or a leading yes/no (1/0). A number is on the 0..``scale`` scale and divided by it
    (the shipped reliability prompt asks for 0-10, so ``Score: 0.8`` is 0.08; write
    ``0.8/1`` for a 0-1 score); a labeled fraction by its denominator. Out-of-range
    values are refused, never clipped or rescaled; so are numbers not given as the score
    ("The 3 crops are fine", "3/4 crops").
    """
    _check_scale(scale)
    text = reply.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "score" in data:
        value = data["score"]
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"'score' must be a number, got {value!r}")
        text = f"score: {value}"
    found = _LABELED_RE.search(text) or _LONE_RE.match(text)
    if found is None:
        fraction = _FRACTION_RE.search(text)
        if fraction and _number(fraction.group(2)) == scale:  # "3/4 crops" is no rating
            found = fraction
    if found is None:
        word = _YES_NO_RE.match(text)
        if word:
            return 1.0 if word.group(1).lower() == "yes" else 0.0
        raise ValueError(f"no score in the reply (no 'Score: N', 'N/{scale:g}' or lone number)")
    value = _number(found.group(1))
    given = found.lastindex == 2 and found.group(2) is not None
    top = _number(found.group(2)) if given else scale
    if top <= 0:
        raise ValueError(f"score {found.group(0).strip()!r} has a denominator <= 0")
    if not 0 <= value <= top:
        raise ValueError(f"score {value:g} is outside 0..{top:g}")
    return value / top


def parse_score(reply: str, scale: float = 10.0) -> float | None:
    """:func:`read_score`, or None when the reply holds no valid score (the judge counts
    those as unscored; ``read_score`` says why). A bad ``scale`` still raises."""
    _check_scale(scale)
    try:
        return read_score(reply, scale)
    except ValueError:
        return None


@dataclass
class JudgeResult:
    """Per-sample judge scores (None = not scored) and the raw judge replies."""

    reliability: list[float | None] = field(default_factory=list)
    sufficiency: list[float | None] = field(default_factory=list)
    reliability_replies: list[str | None] = field(default_factory=list)
    sufficiency_replies: list[str | None] = field(default_factory=list)


class FaithfulnessJudge:
    """Scores reliability and sufficiency of the crops of traces with a judge backend.

    Args:
        backend: the judge model (local or endpoint).
        reliability_prompt / sufficiency_prompt / agreement_prompt: templates with the
            fields of the shipped ones (``{question}``, ``{answer}``, ``{n_crops}`` /
            ``{question}`` / ``{question}``, ``{reference}``, ``{answer}``).
        match: how the sufficiency answer is compared with the reference.
    """

    def __init__(
        self,
        backend: AnswerBackend,
        *,
        reliability_prompt: str | None = None,
        sufficiency_prompt: str | None = None,
        agreement_prompt: str | None = None,
        match: MatchMode | AnswerMatcher = "exact",
        max_new_tokens: int = 32,
    ) -> None:
        self.backend = backend
        self.reliability_prompt = reliability_prompt or load_prompt("judge_reliability")
        self.sufficiency_prompt = sufficiency_prompt or load_prompt("judge_sufficiency")
        self.agreement_prompt = agreement_prompt or load_prompt("judge_agreement")
        self.match = match
        self.max_new_tokens = max_new_tokens

    def _reliability_prompt(self, trace: Trace) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if trace.image is not None:
            content.append({"type": "image", "image": trace.image})
        content += [{"type": "image", "image": crop} for crop in trace.crops]
        text = self.reliability_prompt.format(
            question=trace.question, answer=trace.answer or "", n_crops=len(trace.crops)
        )
        content.append({"type": "text", "text": text})
        return [{"role": "user", "content": content}]

    def _sufficiency_prompt(self, trace: Trace) -> list[dict[str, Any]]:
        return sufficiency_query(trace.crops, trace.question, self.sufficiency_prompt)

    def _ask(self, traces: Sequence[Trace], build) -> list[str | None]:
        index = [i for i, t in enumerate(traces) if t.crops]
        replies: list[str | None] = [None] * len(traces)
        if index:
            answers = self.backend.answer([build(traces[i]) for i in index], self.max_new_tokens)
            for i, reply in zip(index, answers):
                replies[i] = reply
        return replies

    def grade(self, traces: Sequence[Trace]) -> tuple[list[bool | None], list[str]]:
        """The judge's verdict on each trace's answer against its reference (True: right;
        None: no readable yes/no), and its replies; one batched call, text only."""
        prompts = [
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": self.agreement_prompt.format(
                                question=t.question,
                                reference=t.reference if t.reference is not None else "",
                                answer=t.answer or "",
                            ),
                        }
                    ],
                }
            ]
            for t in traces
        ]
        replies = self.backend.answer(prompts, self.max_new_tokens) if prompts else []
        scores = [parse_score(reply, scale=1.0) for reply in replies]
        return [None if s is None else s >= 0.5 for s in scores], list(replies)

    def score(
        self, traces: Sequence[Trace], metrics: Sequence[str] = ("reliability", "sufficiency")
    ) -> JudgeResult:
        """Judge every trace (one batched backend call per metric)."""
        unknown = set(metrics) - {"reliability", "sufficiency"}
        if unknown:
            raise ValueError(
                f"metrics must be among reliability, sufficiency; got {sorted(unknown)}"
            )
        result = JudgeResult()
        if "reliability" in metrics:
            result.reliability_replies = self._ask(traces, self._reliability_prompt)
            result.reliability = [
                None if r is None else parse_score(r) for r in result.reliability_replies
            ]
        if "sufficiency" in metrics:
            result.sufficiency_replies = self._ask(traces, self._sufficiency_prompt)
            result.sufficiency = [
                None
                if reply is None
                else float(
                    answers_match(
                        answer_from_reply(reply),
                        trace.reference if trace.reference is not None else trace.answer,
                        self.match,
                    )
                )
                for trace, reply in zip(traces, result.sufficiency_replies)
            ]
        return result

"""LVLM-judge metrics of the visual components (crops) of a trace.

* Reliability: a judge sees the full image, the crops, the question and the model's
  answer, and rates 0-10 whether the crops are the right evidence and agree with the
  answer (scaled to 0-1).
* Sufficiency: the judge sees only the crops and the question (no full image, no
  reasoning) and answers; the score is 1 if that answer matches the reference (the
  trace's own answer when there is no reference), else 0.

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

__all__ = ["FaithfulnessJudge", "JudgeResult", "parse_score"]

_SCORE_RES = (
    re.compile(r"score\W{0,3}(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?", re.I),
    re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(\d+)"),
    re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.]*\d)"),
)


def parse_score(reply: str, scale: float = 10.0) -> float | None:
    """A judge's 0..``scale`` rating as 0..1, or None when the reply holds no valid score.

    Reads ``{"score": 7}``, ``Score: 7``, ``7/10``, a lone number, or yes/no (1/0).
    """
    text = reply.strip()
    try:
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("score"), int | float):
            text = f"score: {data['score']}"
    except json.JSONDecodeError:
        pass
    for pattern in _SCORE_RES:
        found = pattern.search(text)
        if not found:
            continue
        value = float(found.group(1))
        denominator = float(found.group(2)) if found.lastindex == 2 and found.group(2) else scale
        if denominator > 0 and 0 <= value <= denominator:
            return value / denominator
        return None
    word = re.match(r"\W*(yes|no)\b", text, re.I)
    if word:
        return 1.0 if word.group(1).lower() == "yes" else 0.0
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
        reliability_prompt / sufficiency_prompt: templates with the fields of the shipped
            ones (``{question}``, ``{answer}``, ``{n_crops}`` / ``{question}``).
        match: how the sufficiency answer is compared with the reference.
    """

    def __init__(
        self,
        backend: AnswerBackend,
        *,
        reliability_prompt: str | None = None,
        sufficiency_prompt: str | None = None,
        match: MatchMode | AnswerMatcher = "exact",
        max_new_tokens: int = 32,
    ) -> None:
        self.backend = backend
        self.reliability_prompt = reliability_prompt or load_prompt("judge_reliability")
        self.sufficiency_prompt = sufficiency_prompt or load_prompt("judge_sufficiency")
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

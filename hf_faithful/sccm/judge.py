"""An LLM judge for free-form answers: DeepEyes' accuracy reward, and SCCM's sufficiency
match through the same judge.

DeepEyes' references are often sentences ("The umbrella is red.") while rollouts answer
"red"; exact match calls that wrong, so DeepEyes asks an LLM (Qwen2.5-72B-Instruct served
with vLLM) whether the two answers agree. :class:`AnswerJudge` does the same through any
:class:`~hf_faithful.mcot.backends.AnswerBackend` (an OpenAI-compatible endpoint or a local
model, built with :func:`~hf_faithful.mcot.backends.build_backend`):

- :class:`JudgeAccuracy` is a TRL reward function,
  ``f(prompts, completions, answer, question=None, **kwargs) -> list[float | None]``,
  logged as ``rewards/judge_accuracy``;
- the judge itself is a ``(prediction, reference) -> bool`` matcher with a batched
  ``match_batch``, so ``SCCMRewardTrainer(answer_match=judge)`` (or
  ``SCCMConfig(answer_match="judge", judge_model=...)``) judges the sufficiency answers too.

Answers equal after normalization are accepted without asking (``exact_shortcut``), and
identical (question, reference, answer) triples in a batch are asked once: a group of 16
rollouts often repeats the same short answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from hf_faithful.mcot.answers import exact_match
from hf_faithful.mcot.backends import AnswerBackend, build_backend
from hf_faithful.mcot.messages import final_answer, message_text

__all__ = [
    "DEFAULT_JUDGE_PROMPT",
    "AnswerJudge",
    "JudgeAccuracy",
    "read_verdict",
]

logger = logging.getLogger(__name__)

JUDGE_SYSTEM_PROMPT = "You are a careful and strict grader."
DEFAULT_JUDGE_PROMPT = (
    "Decide whether a model's answer to a question agrees with the reference answer.\n"
    "They agree when they say the same thing, even in other words or with more or less "
    "detail (for example 'left' and 'It is on the left side of the picture.'). They disagree "
    "when the model's answer is different, contradicts the reference, or hedges between "
    "several answers.\n\n"
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Model answer: {prediction}\n\n"
    "Reply with 1 if they agree and 0 if they do not. Output only the digit."
)

_LABEL = re.compile(r"(?:judge?ment|verdict|answer|score)\s*[:=]\s*", re.I)
_WORDS = {
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
    "true": True,
    "false": False,
    "correct": True,
    "incorrect": False,
    "consistent": True,
    "inconsistent": False,
    "agree": True,
    "disagree": False,
}
_TOKEN = re.compile(r"[a-z0-9]+")


def read_verdict(reply: str | None) -> bool | None:
    """A judge's verdict: ``True`` / ``False`` from ``1`` / ``0`` (or yes / no, correct /
    incorrect, ...), read after the last ``Judgement:`` / ``Verdict:`` label when there is
    one, else from the first word of the reply; ``None`` when no verdict can be read."""
    if not reply:
        return None
    text = reply.strip()
    labels = list(_LABEL.finditer(text))
    if labels:
        text = text[labels[-1].end() :]
    token = _TOKEN.search(text.lower().replace("*", ""))
    if token is None:
        return None
    return _WORDS.get(token.group(0))


class AnswerJudge:
    """Judges whether free-form answers agree with references, with a chat model.

    Args:
        backend: answers the judge prompts (text only), e.g. ``build_backend("judge",
            "http://host:18901/v1")`` for a vLLM server, or a local model.
        prompt: user message with ``{question}``, ``{reference}`` and ``{prediction}``.
        system_prompt: system message (``None`` for none).
        max_new_tokens: budget of a verdict (one digit is asked for).
        exact_shortcut: accept normalized exact matches without asking the judge.
    """

    def __init__(
        self,
        backend: AnswerBackend,
        *,
        prompt: str = DEFAULT_JUDGE_PROMPT,
        system_prompt: str | None = JUDGE_SYSTEM_PROMPT,
        max_new_tokens: int = 8,
        exact_shortcut: bool = True,
    ) -> None:
        if not isinstance(backend, AnswerBackend):
            raise TypeError(
                f"backend must have an answer(prompts, max_new_tokens, stop) method, got {type(backend).__name__}"
            )
        for key in ("{question}", "{reference}", "{prediction}"):
            if key not in prompt:
                raise ValueError(f"prompt must contain the {key} placeholder")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.backend = backend
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.max_new_tokens = max_new_tokens
        self.exact_shortcut = exact_shortcut
        self.asked = 0  # judge prompts sent so far
        self.unreadable = 0  # replies without a readable verdict so far

    @classmethod
    def from_model(
        cls,
        model: str,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        max_workers: int | None = None,
        device: Any = None,
        **kwargs: Any,
    ) -> AnswerJudge:
        """A judge over ``model``: the served model name behind ``base_url`` (an
        OpenAI-compatible endpoint), else a local model path / Hub id (see
        :func:`~hf_faithful.mcot.backends.build_backend`); ``max_workers`` sets the
        endpoint's requests in flight."""
        backend = build_backend(model, base_url, api_key=api_key, device=device)
        if max_workers is not None and hasattr(backend, "max_workers"):
            if max_workers < 1:
                raise ValueError(f"max_workers must be >= 1, got {max_workers}")
            backend.max_workers = max_workers
        return cls(backend, **kwargs)

    def _messages(self, question: str, reference: str, prediction: str) -> list[dict[str, str]]:
        text = self.prompt.format(question=question, reference=reference, prediction=prediction)
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*messages, {"role": "user", "content": text}]

    def judge(
        self,
        predictions: Sequence[str | None],
        references: Sequence[str | None],
        questions: Sequence[str | None] | None = None,
    ) -> list[bool | None]:
        """One verdict per pair: ``False`` for a missing or empty prediction, ``None`` for a
        missing reference or an unreadable judge reply (counted in ``unreadable``)."""
        n = len(predictions)
        questions = [None] * n if questions is None else list(questions)
        if len(references) != n or len(questions) != n:
            raise ValueError(
                f"got {n} predictions, {len(references)} references and {len(questions)} questions"
            )
        verdicts: list[bool | None] = [None] * n
        pending: dict[tuple[str, str, str], list[int]] = {}
        for i, (pred, ref, question) in enumerate(zip(predictions, references, questions)):
            if ref is None or not str(ref).strip():
                continue
            if pred is None or not str(pred).strip():
                verdicts[i] = False
            elif self.exact_shortcut and exact_match(str(pred), str(ref)):
                verdicts[i] = True
            else:
                key = (str(question or "").strip(), str(ref).strip(), str(pred).strip())
                pending.setdefault(key, []).append(i)
        if pending:
            keys = list(pending)
            replies = self.backend.answer(
                [self._messages(*key) for key in keys], max_new_tokens=self.max_new_tokens
            )
            if len(replies) != len(keys):
                raise RuntimeError(f"the judge returned {len(replies)} replies for {len(keys)}")
            self.asked += len(keys)
            for key, reply in zip(keys, replies):
                verdict = read_verdict(reply)
                if verdict is None:
                    self.unreadable += 1
                    logger.warning("judge reply without a verdict: %r", reply[:200])
                for i in pending[key]:
                    verdicts[i] = verdict
        return verdicts

    def match_batch(
        self,
        predictions: Sequence[str | None],
        references: Sequence[str | None],
        questions: Sequence[str | None] | None = None,
    ) -> list[bool]:
        """:meth:`judge` as plain booleans (no verdict counts as no match): the batched
        matcher the SCCM sufficiency reward calls."""
        return [bool(v) for v in self.judge(predictions, references, questions)]

    def __call__(self, prediction: str, reference: str) -> bool:
        """``(prediction, reference) -> bool``, the matcher protocol of ``hf_faithful.mcot.answers``."""
        return self.match_batch([prediction], [reference])[0]


def _question(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return message_text(users[-1]).strip() if users else ""


class JudgeAccuracy:
    """DeepEyes' accuracy reward with an LLM judge: 1.0 when the rollout's final answer
    agrees with the reference, 0.0 when it does not (or the rollout gave no answer),
    ``None`` (left out by TRL) for rows without a reference or an unreadable verdict.

    Call signature (TRL's): ``(prompts, completions, answer, question=None,
    log_metric=None, **kwargs) -> list[float | None]``; ``question`` is the dataset column
    (else the prompt's last user message). Logs ``judge/asked_per_rollout`` and
    ``judge/unreadable_fraction``.
    """

    __name__ = "judge_accuracy"

    def __init__(self, judge: AnswerJudge) -> None:
        if not isinstance(judge, AnswerJudge):
            raise TypeError(f"judge must be an AnswerJudge, got {type(judge).__name__}")
        self.judge = judge

    def __call__(
        self,
        prompts: list,
        completions: list,
        answer: list[str | None],
        question: list[str | None] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        questions = [q or _question(p) for q, p in zip(question or [None] * len(prompts), prompts)]
        asked, unreadable = self.judge.asked, self.judge.unreadable
        verdicts = self.judge.judge([final_answer(c) for c in completions], answer, questions)
        if log_metric is not None and completions:
            n = len(completions)
            log_metric("judge/asked_per_rollout", (self.judge.asked - asked) / n)
            log_metric("judge/unreadable_fraction", (self.judge.unreadable - unreadable) / n)
        return [None if v is None else float(v) for v in verdicts]

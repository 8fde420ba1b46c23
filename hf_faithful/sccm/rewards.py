"""The SCCM rewards (arXiv 2510.23482): sufficiency and minimality of a rollout's crops.

Plain functions hold the math (``union_area``, ``minimality_score``,
``minimality_reward``); two small callables wrap them in TRL's reward signature
``f(prompts=, completions=, completion_ids=, environments=, **columns) -> list[float | None]``
so they also work on a plain ``GRPOTrainer`` with ``environment_factory=ZoomInEnvironment``.

- ``SufficiencyReward`` (logged as ``rewards/sccm_sufficiency``): re-asks each question with
  only that rollout's crops (no full image, no reasoning text: the sufficiency query of
  :mod:`hf_faithful.mcot.messages`); 1.0 when the reply matches the
  reference (or, for rows without one, the rollout's own final answer), else 0.0.
- ``MinimalityReward`` (logged as ``rewards/sccm_minimality``): ``1 - area(crops)/area(image)``,
  granted only to sufficient rollouts by default. It reads the sufficiency verdicts stored on
  the environments, so it must come after ``SufficiencyReward`` in ``reward_funcs``.

``answer_accuracy`` and ``answer_format`` are DeepEyes' task rewards (weights 0.8 / 0.2 in
its code), which SCCM adds to. DeepEyes judges accuracy with an LLM:
:class:`~hf_faithful.sccm.judge.JudgeAccuracy` does that, and the same
:class:`~hf_faithful.sccm.judge.AnswerJudge` can match the sufficiency answers.

Only crops the model saw count: a crop whose tool response TRL dropped (it would overflow
``max_completion_length``) is left out (:func:`~hf_faithful.sccm.environment.forget_unseen_crops`).
Rollouts without a valid crop get ``no_crop_reward`` for both (0.0 by default, ``None`` to
leave them out). The exact formulas of the paper were not published; this is the project's
design (see docs/METHODS.md#sccm-rewards).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hf_faithful.mcot.answers import AnswerMatcher, answers_match
from hf_faithful.mcot.messages import (
    answer_from_reply,
    final_answer,
    message_text,
    sufficiency_query,
)
from hf_faithful.mcot.zoom import Box
from hf_faithful.sccm.environment import ZoomInEnvironment, forget_unseen_crops

__all__ = [
    "MinimalityReward",
    "SufficiencyReward",
    "answer_accuracy",
    "answer_format",
    "count_malformed_tool_calls",
    "minimality_reward",
    "minimality_score",
    "union_area",
]

# A batch of sufficiency queries (chat conversations) -> one reply per query.
AnswerFn = Callable[[list[list[dict[str, Any]]]], list[str]]


def answer_accuracy(completions: list, answer: list, **kwargs: Any) -> list[float | None]:
    """DeepEyes' accuracy reward: 1.0 when the rollout's final answer matches the reference,
    else 0.0; None (left out) for rows without a reference."""
    return [
        None if ref is None else float(answers_match(final_answer(c), ref))
        for c, ref in zip(completions, answer)
    ]


def answer_format(completions: list, **kwargs: Any) -> list[float]:
    """DeepEyes' format reward: 1.0 when the last turn holds an ``<answer>`` block."""
    return [float("<answer>" in message_text(c[-1])) for c in completions]


def union_area(boxes: Sequence[Box]) -> float:
    """Exact area of the union of axis-aligned boxes (overlaps counted once).

    Sweeps the distinct x coordinates; in each vertical strip the covered y length is the
    length of the union of the intervals of the boxes spanning the strip.
    """
    boxes = [b for b in boxes if b.area > 0]
    xs = sorted({b.x1 for b in boxes} | {b.x2 for b in boxes})
    total = 0.0
    for left, right in zip(xs, xs[1:]):
        spans = sorted((b.y1, b.y2) for b in boxes if b.x1 <= left and b.x2 >= right)
        covered, end = 0.0, float("-inf")
        for y1, y2 in spans:
            if y2 <= end:
                continue
            covered += y2 - max(y1, end)
            end = y2
        total += (right - left) * covered
    return total


def minimality_score(
    boxes: Sequence[Box], image_size: tuple[int, int], measure: str = "union_area"
) -> float:
    """``1 - area / image area`` in [0, 1], ``area`` being the union of the boxes
    (``"union_area"``) or the largest box (``"largest_crop"``), in absolute pixels."""
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size}")
    if measure == "union_area":
        area = union_area(boxes)
    elif measure == "largest_crop":
        area = max((b.area for b in boxes), default=0.0)
    else:
        raise ValueError(f"measure must be 'union_area' or 'largest_crop', got {measure!r}")
    return min(1.0, max(0.0, 1.0 - area / (width * height)))


def minimality_reward(
    boxes: Sequence[Box],
    image_size: tuple[int, int],
    sufficient: bool | None,
    *,
    measure: str = "union_area",
    requires_sufficiency: bool = True,
    no_crop_reward: float | None = 0.0,
) -> float | None:
    """``r_m`` of one rollout.

    ``no_crop_reward`` without boxes; ``None`` when the rollout was left out of sufficiency
    (``sufficient is None``) and the reward is gated; 0.0 when gated and insufficient.
    """
    if not boxes:
        return no_crop_reward
    if requires_sufficiency:
        if sufficient is None:
            return None
        if not sufficient:
            return 0.0
    return minimality_score(boxes, image_size, measure)


def count_malformed_tool_calls(completion: list[dict[str, Any]] | str) -> int:
    """``<tool_call>`` blocks TRL could not parse (they stay in the text instead of becoming
    ``tool_calls``): broken JSON never reaches the tool, so it is counted here."""
    if isinstance(completion, str):
        return completion.count("<tool_call>")
    return sum(
        message_text(m).count("<tool_call>") for m in completion if m.get("role") == "assistant"
    )


def _question_from_prompt(prompt: list[dict[str, Any]] | str) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"]
    return message_text(users[-1]).strip() if users else ""


def _check_environments(environments: Any, reward: str) -> list[ZoomInEnvironment]:
    if environments is None:
        raise ValueError(
            f"{reward} needs the rollouts' crops: train with environment_factory=ZoomInEnvironment "
            "(SCCMRewardTrainer does this for you)"
        )
    for env in environments:
        if not isinstance(env, ZoomInEnvironment):
            raise TypeError(
                f"{reward} needs ZoomInEnvironment environments (or subclasses), got {type(env).__name__}"
            )
    return environments


class SufficiencyReward:
    """``r_s``: can the question be answered from the rollout's crops alone?

    Args:
        answer_fn: answers a batch of sufficiency queries (chat conversations with the crops as
            images) with one reply each; batching is up to it. Called once per reward call, with
            an empty list when no rollout needs a query.
        match: ``(prediction, reference) -> bool`` (see ``hf_faithful.mcot.answers``); one
            with ``match_batch(predictions, references, questions)`` (an
            :class:`~hf_faithful.sccm.judge.AnswerJudge`) judges each batch in one call.
        prompt: text after the crops; contains ``{question}``.
        no_reference: ``"own_answer"`` (compare with the rollout's final answer) or ``"skip"``
            (``None``) for rows without a reference answer.
        no_crop_reward: reward of a rollout without valid crops (``None``: left out).
    """

    __name__ = "sccm_sufficiency"

    def __init__(
        self,
        answer_fn: AnswerFn,
        match: AnswerMatcher,
        prompt: str,
        no_reference: str = "own_answer",
        no_crop_reward: float | None = 0.0,
    ):
        if no_reference not in ("own_answer", "skip"):
            raise ValueError(f"no_reference must be 'own_answer' or 'skip', got {no_reference!r}")
        self.answer_fn = answer_fn
        self.match = match
        self.prompt = prompt
        self.no_reference = no_reference
        self.no_crop_reward = no_crop_reward

    def _verdicts(
        self, answers: list[str | None], targets: list[str], questions: list[str]
    ) -> list[bool]:
        """Whether each answer matches its target; an empty answer never does. A matcher
        with ``match_batch(predictions, references, questions)`` (an LLM judge) gets the
        whole batch, with the questions, in one call."""
        batch = getattr(self.match, "match_batch", None)
        if batch is None:
            return [bool(a) and bool(self.match(a, t)) for a, t in zip(answers, targets)]
        asked = [i for i, a in enumerate(answers) if a]
        matched = batch(
            [answers[i] for i in asked],
            [targets[i] for i in asked],
            [questions[i] for i in asked],
        )
        verdicts = [False] * len(answers)
        for i, verdict in zip(asked, matched):
            verdicts[i] = bool(verdict)
        return verdicts

    def __call__(
        self,
        prompts: list,
        completions: list,
        environments: list[ZoomInEnvironment] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        environments = _check_environments(environments, self.__name__)
        rewards: list[float | None] = [None] * len(completions)
        targets: dict[int, str] = {}
        for i, (completion, env) in enumerate(zip(completions, environments)):
            forget_unseen_crops(env, completion)
            env.scored = True
            env.sufficient = None
            env.sufficiency_answer = None
            if not env.crops:
                rewards[i] = self.no_crop_reward
                continue
            target = env.reference
            if target is None and self.no_reference == "own_answer":
                target = final_answer(completion)
                if target is None:  # nothing to be sufficient for
                    env.sufficient = False
                    rewards[i] = 0.0
                    continue
            if target is None:
                continue  # no reference and no_reference="skip": left out
            targets[i] = target
        order = sorted(targets)
        questions = [environments[i].question or _question_from_prompt(prompts[i]) for i in order]
        queries = [
            sufficiency_query(environments[i].crops, question, self.prompt)
            for i, question in zip(order, questions)
        ]
        # Called even without queries, so distributed answerers can synchronize across ranks.
        replies = self.answer_fn(queries)
        if len(replies) != len(queries):
            raise ValueError(
                f"answer_fn returned {len(replies)} replies for {len(queries)} queries"
            )
        answers = [answer_from_reply(reply) for reply in replies]
        verdicts = self._verdicts(answers, [targets[i] for i in order], questions)
        for i, answer, sufficient in zip(order, answers, verdicts):
            environments[i].sufficient = sufficient
            environments[i].sufficiency_answer = answer
            rewards[i] = 1.0 if sufficient else 0.0
        if log_metric is not None and completions:
            n = len(completions)
            log_metric("sccm/crops_per_rollout", sum(len(e.crops) for e in environments) / n)
            log_metric("sccm/no_crop_fraction", sum(not e.crops for e in environments) / n)
            log_metric(
                "sccm/unseen_crops_per_rollout", sum(e.unseen_crops for e in environments) / n
            )
            failed = sum(
                e.failed_calls + count_malformed_tool_calls(c)
                for e, c in zip(environments, completions)
            )
            log_metric("sccm/failed_tool_calls_per_rollout", failed / n)
        return rewards


class MinimalityReward:
    """``r_m``: how little of the image the rollout's crops cover (see :func:`minimality_reward`).

    Reads the verdicts of :class:`SufficiencyReward`, which must run first in the same batch
    when ``requires_sufficiency`` is set.
    """

    __name__ = "sccm_minimality"

    def __init__(
        self,
        measure: str = "union_area",
        requires_sufficiency: bool = True,
        no_crop_reward: float | None = 0.0,
    ):
        if measure not in ("union_area", "largest_crop"):
            raise ValueError(f"measure must be 'union_area' or 'largest_crop', got {measure!r}")
        self.measure = measure
        self.requires_sufficiency = requires_sufficiency
        self.no_crop_reward = no_crop_reward

    def __call__(
        self,
        completions: list,
        environments: list[ZoomInEnvironment] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        environments = _check_environments(environments, self.__name__)
        for env, completion in zip(environments, completions):
            forget_unseen_crops(env, completion)
        if self.requires_sufficiency and not all(e.scored for e in environments if e.crops):
            raise RuntimeError(
                "sccm_minimality is gated on sufficiency: put SufficiencyReward before "
                "MinimalityReward in reward_funcs"
            )
        rewards = [
            minimality_reward(
                env.boxes,
                env.image_size,
                env.sufficient,
                measure=self.measure,
                requires_sufficiency=self.requires_sufficiency,
                no_crop_reward=self.no_crop_reward,
            )
            for env in environments
        ]
        cropped = [e for e in environments if e.boxes]
        if log_metric is not None and cropped:
            covered = [1.0 - minimality_score(e.boxes, e.image_size, self.measure) for e in cropped]
            log_metric("sccm/crop_area_fraction", sum(covered) / len(covered))
        return rewards

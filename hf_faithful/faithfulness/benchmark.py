"""Multiple-choice scoring for V* Bench / HR-Bench-like data: shuffled options, rule
matching and an optional LLM judge.

A question record may carry ``options`` (a list of texts, or a dict letter -> text) and a
``reference`` (the right option's text or letter). The options are appended to the
question as ``(A) ...`` lines in an order shuffled per record (seed + record id), so a
model that always picks the first option is not measured as accurate; the trace's
reference becomes the shown right option, ``"(C) red"``. :class:`ChoiceMatcher` (the
``match`` of the measurement) maps a reply to an option by its letter through the
shuffle, else by the option's text; a reply neither can map is left to the judge
(``Which option does this reply choose?``), and the judge's decisions are counted.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hf_faithful.mcot.answers import AnswerMatcher, extract_choice, get_matcher, normalize_answer
from hf_faithful.mcot.backends import AnswerBackend, BackendError, answer_each

__all__ = [
    "JUDGE_CHOICE_PROMPT",
    "ChoiceItem",
    "ChoiceMatcher",
    "choice_questions",
    "map_reply",
    "position_accuracy",
    "read_options",
    "shuffle_order",
]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
JUDGE_CHOICE_PROMPT = (
    "Question: {question}\nOptions:\n{options}\nReply: {reply}\n\n"
    "Which option does this reply choose? If it chooses none of them, answer None. "
    "Answer with the letter only."
)
_REFERENCE_RE = re.compile(r"^\(([A-Z])\) ")


def read_options(options: Any) -> tuple[list[str], list[str]]:
    """``(letters, texts)`` of a record's ``options``: a list (lettered A, B, ...) or a
    dict letter -> text (in letter order); ValueError naming what is wrong."""
    if isinstance(options, Mapping):
        letters = sorted(str(k).strip().strip("().").upper() for k in options)
        by_letter = {str(k).strip().strip("().").upper(): v for k, v in options.items()}
        if any(len(k) != 1 or k not in LETTERS for k in letters):
            raise ValueError(f"options: keys must be single letters, got {list(options)}")
        texts = [by_letter[k] for k in letters]
    elif isinstance(options, Sequence) and not isinstance(options, str):
        texts = list(options)
        letters = list(LETTERS[: len(texts)])
    else:
        raise ValueError(f"options must be a list or a dict letter -> text, got {options!r}")
    if not 2 <= len(texts) <= len(LETTERS):
        raise ValueError(f"options: need 2 to {len(LETTERS)}, got {len(texts)}")
    if not all(isinstance(t, (str, int, float)) and str(t).strip() for t in texts):
        raise ValueError(f"options must be non-empty texts, got {texts!r}")
    texts = [str(t).strip() for t in texts]
    if len({normalize_answer(t) for t in texts}) != len(texts):
        raise ValueError(f"options must differ from each other, got {texts!r}")
    return letters, texts


def shuffle_order(n: int, seed: int, record_id: str) -> list[int]:
    """The shown order of ``n`` options (shown position -> original index): one shuffle
    per record, reproducible from ``seed`` and the record's id alone (``random.Random``
    seeded with a string is stable across runs and processes)."""
    order = list(range(n))
    random.Random(f"{seed}:{record_id}").shuffle(order)
    return order


@dataclass
class ChoiceItem:
    """One multiple-choice question as shown: ``options`` in shown order (lettered A, B,
    ...), ``order`` (shown position -> original index) and the right option's shown
    position ``answer`` (None without reference)."""

    id: str
    question: str
    options: list[str]
    order: list[int]
    answer: int | None

    @property
    def prompt(self) -> str:
        """The question with the options appended, one ``(A) text`` line each."""
        return self.question + "\n" + self.options_text

    @property
    def options_text(self) -> str:
        return "\n".join(f"({LETTERS[i]}) {text}" for i, text in enumerate(self.options))

    @property
    def reference(self) -> str | None:
        """The right option as shown, ``"(C) red"`` (the trace's reference)."""
        if self.answer is None:
            return None
        return f"({LETTERS[self.answer]}) {self.options[self.answer]}"


def _reference_index(reference: str, letters: list[str], texts: list[str]) -> int:
    """Original index of the right option, given as its text or its (original) letter."""
    normalized = normalize_answer(reference)
    for i, text in enumerate(texts):
        if normalize_answer(text) == normalized:
            return i
    letter = extract_choice(reference)
    if letter is not None and letter in letters:
        return letters.index(letter)
    raise ValueError(f"reference {reference!r} is neither an option's text nor its letter")


def make_item(
    record: Mapping[str, Any], record_id: str, *, seed: int = 0, shuffle: bool = True
) -> ChoiceItem:
    """The :class:`ChoiceItem` of a question record with ``options`` (see module doc)."""
    letters, texts = read_options(record["options"])
    order = shuffle_order(len(texts), seed, record_id) if shuffle else list(range(len(texts)))
    reference = record.get("reference", record.get("answer"))
    answer = None
    if reference is not None:
        answer = order.index(_reference_index(str(reference), letters, texts))
    return ChoiceItem(
        id=record_id,
        question=str(record["question"]),
        options=[texts[i] for i in order],
        order=order,
        answer=answer,
    )


def _contains(haystack: str, needle: str) -> bool:
    return bool(needle) and f" {needle} " in f" {haystack} "


def map_reply(reply: str | None, options: Sequence[str]) -> int | None:
    """Shown position of the option a reply chooses, by rules: its letter ("C", "(C)
    red", "the answer is C"), else an option's text (the whole reply, or the one option
    whose text it contains, the longest where one option's text holds another's); None
    when the rules cannot tell."""
    if not reply or not reply.strip():
        return None
    letter = extract_choice(reply)
    if letter is not None and LETTERS.index(letter) < len(options):
        return LETTERS.index(letter)
    said = normalize_answer(reply)
    texts = [normalize_answer(o) for o in options]
    if said in texts:
        return texts.index(said)
    found = [i for i, t in enumerate(texts) if _contains(said, t)]
    found = [i for i in found if not any(j != i and _contains(texts[j], texts[i]) for j in found)]
    return found[0] if len(found) == 1 else None


class ChoiceMatcher:
    """``match`` callable ``(prediction, reference) -> bool`` for multiple choice.

    Items are found by their shown reference (``"(C) red"``); references of other records
    are matched with ``fallback`` (the configured mode). A reply the rules cannot map is
    asked to ``judge`` (any AnswerBackend) once, and its letter used; ``n_judged`` counts
    the distinct replies the judge decided, ``n_undecided`` those it could not."""

    __name__ = "choice_options"  # recorded by name in a report's settings

    def __init__(
        self,
        items: Sequence[ChoiceItem],
        *,
        judge: AnswerBackend | None = None,
        fallback: AnswerMatcher | str = "exact",
        max_new_tokens: int = 8,
        prompt: str = JUDGE_CHOICE_PROMPT,
    ) -> None:
        self.items: dict[str, ChoiceItem] = {}
        for item in items:
            if item.reference is not None:
                self.items.setdefault(item.reference, item)
        self.judge = judge
        self.fallback = get_matcher(fallback)
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt
        self.judged: dict[tuple[str, str], int | None] = {}

    def __deepcopy__(self, memo: dict) -> ChoiceMatcher:
        return self  # a settings field (dataclasses.asdict copies it): never copy the judge

    @property
    def n_judged(self) -> int:
        return sum(v is not None for v in self.judged.values())

    @property
    def n_undecided(self) -> int:
        return sum(v is None for v in self.judged.values())

    def choose(self, prediction: str, item: ChoiceItem) -> int | None:
        """Shown position chosen by ``prediction``: rules, then the judge (cached)."""
        index = map_reply(prediction, item.options)
        if index is not None or self.judge is None:
            return index
        key = (item.prompt, prediction)
        if key not in self.judged:
            self.judged[key] = self._ask_judge(prediction, item)
        return self.judged[key]

    def _ask_judge(self, prediction: str, item: ChoiceItem) -> int | None:
        text = self.prompt.format(
            question=item.question, options=item.options_text, reply=prediction
        )
        prompt = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        reply = answer_each(self.judge, [prompt], self.max_new_tokens)[0]
        if isinstance(reply, BackendError):
            warnings.warn(f"choice judge request failed: {reply}", stacklevel=2)
            return None
        letter = extract_choice(reply)
        if letter is None or LETTERS.index(letter) >= len(item.options):
            return None
        return LETTERS.index(letter)

    def __call__(self, prediction: str, reference: str) -> bool:
        item = self.items.get(reference)
        if item is None:
            return bool(self.fallback(prediction, reference))
        return self.choose(prediction, item) == item.answer


def choice_questions(
    questions: Sequence[dict[str, Any]],
    records: Mapping[str, Mapping[str, Any]],
    *,
    seed: int = 0,
    shuffle: bool = True,
) -> tuple[list[dict[str, Any]], list[ChoiceItem]]:
    """Questions whose record (``records``: source -> raw record) has ``options``, with the
    options appended and the reference set to the shown right option; others unchanged.
    A record with bad options or a reference that is no option is skipped with a warning
    naming it, as bad question records are."""
    out, items = [], []
    for question in questions:
        raw = records.get(question.get("source"))
        if raw is None or raw.get("options") is None:
            out.append(question)
            continue
        try:
            item = make_item(raw, str(question["id"]), seed=seed, shuffle=shuffle)
        except ValueError as err:
            warnings.warn(f"{question.get('source')}: {err}; question skipped", stacklevel=2)
            continue
        items.append(item)
        out.append(question | {"question": item.prompt, "reference": item.reference})
    return out, items


def position_accuracy(samples: Sequence[Mapping[str, Any]], condition: str = "original"):
    """Accuracy per shown position of the right option (``{"A": {"n", "accuracy"}}``) over
    a report's samples: a gap between positions is position bias, not knowledge."""
    counts: dict[str, list[int]] = {}
    for sample in samples:
        found = _REFERENCE_RE.match(sample.get("reference") or "")
        correct = sample.get("correct", {}).get(condition)
        if found is None or correct is None:
            continue
        n_right = counts.setdefault(found.group(1), [0, 0])
        n_right[0] += 1
        n_right[1] += bool(correct)
    return {k: {"n": n, "accuracy": right / n} for k, (n, right) in sorted(counts.items())}

"""``FaithfulnessConfig``: the settings of a faithfulness measurement.

Fields follow TRL's ``field(default=..., metadata={"help": ...})`` idiom; the
``hf-faithful faithfulness`` command builds its options from them, so the defaults live
here only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hf_faithful.faithfulness.interventions import TEXT_CORRUPTIONS, VISUAL_INTERVENTIONS
from hf_faithful.faithfulness.prompts import load_prompt
from hf_faithful.mcot.answers import AnswerMatcher, MatchMode
from hf_faithful.mcot.zoom import BoxRules

__all__ = ["DEFAULT_SYSTEM_PROMPT", "JUDGE_METRICS", "FaithfulnessConfig"]

DEFAULT_SYSTEM_PROMPT = "default"  # the shipped ``zoom_system`` prompt
JUDGE_METRICS = ("reliability", "sufficiency")


@dataclass
class FaithfulnessConfig:
    """Settings of a faithfulness measurement (see each field's ``help``).

    ``match`` may also be a callable ``(prediction, reference) -> bool``; ``box_rules``
    says how boxes are read (Qwen3-VL: ``BoxRules(coords="normalized_1000")``).
    """

    visual_interventions: tuple[str, ...] = field(
        default=("noise_gaussian",),
        metadata={
            "help": "do(V) kinds, comma-separated, among "
            + ", ".join(VISUAL_INTERVENTIONS)
            + "; the first is reported as ATE_V (Gaussian noise, as in the paper)"
        },
    )
    text_corruptions: tuple[str, ...] = field(
        default=TEXT_CORRUPTIONS,
        metadata={
            "help": "offline corruptions for do(T) when no rewriter is given, comma-separated, "
            "among " + ", ".join(TEXT_CORRUPTIONS) + "; empty to skip do(T)"
        },
    )
    match: MatchMode | AnswerMatcher = field(
        default="exact",
        metadata={
            "help": "answer matching: 'exact' (normalized), 'choice' (multiple-choice letter) "
            "or a callable (prediction, reference) -> bool"
        },
    )
    baseline: Literal["control", "original"] = field(
        default="control",
        metadata={
            "help": "baseline of the ATEs: 'control' (answer regenerated from the untouched "
            "prefix) or 'original' (the trace's own answer)"
        },
    )
    prefill_answer: bool = field(
        default=True,
        metadata={
            "help": "open <answer> after the prefix so the model answers at once (local models, "
            "endpoints that continue an assistant turn); off for APIs that always start a "
            "new reply"
        },
    )
    system_prompt: str | None = field(
        default=DEFAULT_SYSTEM_PROMPT,
        metadata={
            "help": "system prompt for generating and regenerating: 'default' is the shipped "
            "zoom_system prompt, empty (or None) for no system turn"
        },
    )
    user_template: str = field(
        default="{question}", metadata={"help": "the user turn, with {question}"}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "tokens of a regenerated answer"})
    max_turn_tokens: int = field(
        default=256, metadata={"help": "tokens per assistant turn when generating traces"}
    )
    max_tool_calls: int = field(
        default=4, metadata={"help": "zoom-in calls allowed per trace (more makes it invalid)"}
    )
    box_rules: BoxRules = field(
        default_factory=BoxRules,
        metadata={"help": "coordinates and validation of boxes"},
    )
    judge_metrics: tuple[str, ...] = field(
        default=JUDGE_METRICS,
        metadata={"help": "judge metrics computed when a judge is given, comma-separated"},
    )
    n_resamples: int = field(
        default=10_000,
        metadata={
            "help": "bootstrap resamples of the accuracy and judge-score means (the ATE "
            "intervals are Newcombe's closed-form score intervals)"
        },
    )
    confidence: float = field(
        default=0.95, metadata={"help": "level of every interval (ATEs, accuracy, judge scores)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of every random choice"})

    def __post_init__(self) -> None:
        self.visual_interventions = tuple(self.visual_interventions)
        self.text_corruptions = tuple(self.text_corruptions)
        self.judge_metrics = tuple(self.judge_metrics)
        for name, kinds, allowed in (
            ("visual_interventions", self.visual_interventions, VISUAL_INTERVENTIONS),
            ("text_corruptions", self.text_corruptions, TEXT_CORRUPTIONS),
            ("judge_metrics", self.judge_metrics, JUDGE_METRICS),
        ):
            for kind in kinds:
                if kind not in allowed:
                    raise ValueError(f"{name}: {kind!r} is not one of {allowed}")
        if self.baseline not in ("control", "original"):
            raise ValueError(f"baseline must be 'control' or 'original', got {self.baseline!r}")
        if not callable(self.match) and self.match not in ("exact", "choice"):
            raise ValueError(f"match must be 'exact', 'choice' or a callable, got {self.match!r}")
        if "{question}" not in self.user_template:
            raise ValueError("user_template must contain '{question}'")
        for name in ("max_new_tokens", "max_turn_tokens", "n_resamples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_tool_calls < 0:
            raise ValueError(f"max_tool_calls must be >= 0, got {self.max_tool_calls}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

    @property
    def resolved_system_prompt(self) -> str | None:
        """The system prompt text (the shipped one for ``"default"``)."""
        if self.system_prompt == DEFAULT_SYSTEM_PROMPT:
            return load_prompt("zoom_system")
        return self.system_prompt

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data (a report's provenance); a callable ``match`` is
        recorded by name."""
        data = asdict(self)
        if callable(self.match):
            data["match"] = getattr(self.match, "__name__", repr(self.match))
        return data

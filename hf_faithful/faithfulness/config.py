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
from hf_faithful.mcot.messages import (
    DEFAULT_TOOL_ERROR,
    DEFAULT_TOOL_RESPONSE,
    check_tool_templates,
)
from hf_faithful.mcot.zoom import BoxRules

__all__ = [
    "DEFAULT_ANSWER_PROMPT",
    "DEFAULT_SYSTEM_PROMPT",
    "JUDGE_METRICS",
    "SYSTEM_PROMPTS",
    "FaithfulnessConfig",
]

DEFAULT_SYSTEM_PROMPT = "default"  # the shipped ``zoom_system`` prompt
# system_prompt values that name a shipped prompt (recorded by name in a report's settings)
SYSTEM_PROMPTS = {DEFAULT_SYSTEM_PROMPT: "zoom_system", "deepeyes": "deepeyes_system"}
DEFAULT_ANSWER_PROMPT = "Give your final answer inside <answer></answer>."
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
    prefill_answer: bool | None = field(
        default=None,
        metadata={
            "help": "open <answer> after the prefix so the model answers at once. Unset: on "
            "for local models and endpoints with --continue-final-message; off for other "
            "endpoints, which open a new turn after a prefill (their whole reply would be "
            "taken as the answer): the answer is then asked for in a fresh user turn "
            "(answer_prompt) and read from its <answer> tag"
        },
    )
    answer_prompt: str = field(
        default=DEFAULT_ANSWER_PROMPT,
        metadata={
            "help": "user turn asking for the answer when it is not prefilled and the model "
            "cannot continue its own turn (endpoints without --continue-final-message)"
        },
    )
    system_prompt: str | None = field(
        default=DEFAULT_SYSTEM_PROMPT,
        metadata={
            "help": "system prompt for generating and regenerating: 'default' is the shipped "
            "zoom_system prompt, 'deepeyes' DeepEyes' own (with its <tools> block), any other "
            "text is used as is, empty (or None) for no system turn"
        },
    )
    user_template: str = field(
        default="{question}", metadata={"help": "the user turn, with {question}"}
    )
    tool_response: str = field(
        default=DEFAULT_TOOL_RESPONSE,
        metadata={"help": "the tool's turn returning a crop; {image} marks where it goes"},
    )
    tool_error: str = field(
        default=DEFAULT_TOOL_ERROR,
        metadata={"help": "the tool's turn refusing a call; {error} is the reason"},
    )
    max_new_tokens: int = field(default=32, metadata={"help": "tokens of a regenerated answer"})
    max_turn_tokens: int = field(
        default=256,
        metadata={
            "help": "tokens per assistant turn when generating traces (a turn cut short "
            "makes its trace invalid) and of a regenerated continuation"
        },
    )
    regenerate_continuation: bool = field(
        default=False,
        metadata={
            "help": "also regenerate the reasoning after the last crop, not only the answer: "
            "reports 'ATE_V (regenerated continuation)' beside 'ATE_V (answer only)', whose "
            "post-crop reasoning is held fixed (which pulls it towards 0)"
        },
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
    validate_judge: int = field(
        default=0,
        metadata={
            "help": "judge validation: on a seeded sample of this many traces the judge says "
            "whether the answer is right, and its agreement with exact match (or the "
            "records' judge_label) is reported beside reliability and sufficiency; 0 = off"
        },
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
    shuffle_options: bool = field(
        default=True,
        metadata={
            "help": "multiple choice (question records with 'options'): show the options in "
            "an order shuffled per record (seed + record id), so position bias does not "
            "pass for accuracy; answers are mapped back through the shuffle"
        },
    )

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
        check_tool_templates(self.tool_response, self.tool_error)
        for name in ("max_new_tokens", "max_turn_tokens", "n_resamples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.validate_judge < 0:
            raise ValueError(f"validate_judge must be >= 0, got {self.validate_judge}")
        if self.max_tool_calls < 0:
            raise ValueError(f"max_tool_calls must be >= 0, got {self.max_tool_calls}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

    @property
    def resolved_system_prompt(self) -> str | None:
        """The system prompt text (a shipped one for a name of ``SYSTEM_PROMPTS``)."""
        if self.system_prompt in SYSTEM_PROMPTS:
            return load_prompt(SYSTEM_PROMPTS[self.system_prompt])
        return self.system_prompt

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data (a report's provenance); a callable ``match`` is
        recorded by name."""
        data = asdict(self)
        if callable(self.match):
            data["match"] = getattr(self.match, "__name__", repr(self.match))
        return data

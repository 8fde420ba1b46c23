"""``SCCMConfig``: GRPOConfig plus the knobs of the SCCM sufficiency / minimality rewards,
the LLM judge of free-form answers, and presets for known recipes (``from_preset``)."""

from __future__ import annotations

import copy
import importlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trl import GRPOConfig

from hf_faithful.mcot.answers import get_matcher
from hf_faithful.mcot.zoom import BoxRules
from hf_faithful.sccm.presets import PRESETS

if TYPE_CHECKING:
    from hf_faithful.sccm.judge import AnswerJudge

DEFAULT_SUFFICIENCY_PROMPT = (
    "{question}\n"
    "The images are regions cropped from a larger picture. Answer the question from them. "
    "Reply with the final answer only, inside <answer></answer>."
)

ANSWERERS = ("policy", "local", "openai")
MINIMALITY_MEASURES = ("union_area", "largest_crop")
NO_REFERENCE_MODES = ("own_answer", "skip")
BOX_COORDS = ("auto", "absolute", "normalized_1000")


@dataclass
class SCCMConfig(GRPOConfig):
    r"""
    Configuration for [`SCCMRewardTrainer`]: every [`~trl.GRPOConfig`] field, plus the SCCM rewards
    (arXiv 2510.23482) that make the crops of a multimodal chain of thought sufficient and minimal.

    The trainer appends two reward functions after the user's: ``sccm_sufficiency`` (weight
    ``sufficiency_weight``) and ``sccm_minimality`` (weight ``minimality_weight``). ``reward_weights``
    may list weights for the user's functions only; the SCCM weights are appended.

    Parameters:
        sufficiency_weight (`float`, defaults to `1.0`):
            Weight of ``r_s``: 1 when the question, re-asked with only the rollout's crops (no full
            image, no reasoning), is answered correctly, else 0.
        minimality_weight (`float`, defaults to `0.5`):
            Weight of ``r_m``: ``1 - area(crops) / area(image)``, see ``minimality_measure``.
        answerer (`str`, defaults to `"policy"`):
            Who answers the sufficiency queries: ``"policy"`` (the model being trained, unwrapped, without
            gradients: annotation-free, the paper's default), ``"local"`` (a transformers VLM loaded from
            ``answerer_model``) or ``"openai"`` (an OpenAI-compatible chat endpoint at
            ``answerer_base_url`` serving ``answerer_model``).
        answerer_model (`str` or `None`):
            Model path / Hub id (``"local"``) or served model name (``"openai"``).
        answerer_base_url (`str` or `None`):
            Base URL of the OpenAI-compatible endpoint, e.g. ``http://localhost:8000/v1``.
        answerer_api_key_env (`str`, defaults to `"OPENAI_API_KEY"`):
            Environment variable holding the endpoint's API key (the key itself never sits in the config).
        answer_match (`str`, defaults to `"exact"`):
            How a sufficiency answer is compared with the reference: ``"exact"`` (normalized exact match),
            ``"choice"`` (multiple-choice letter), ``"judge"`` (the LLM judge of ``judge_model``, for
            free-form answers, as DeepEyes judges accuracy), or ``"package.module:function"`` naming a
            ``(prediction, reference) -> bool`` callable. A callable object (e.g. an
            [`~hf_faithful.sccm.judge.AnswerJudge`]) can also be passed to the trainer as ``answer_match=``.
        judge_model (`str` or `None`):
            The LLM judge: a served model name (with ``judge_base_url``) or a local path / Hub id.
        judge_base_url (`str` or `None`):
            Base URL of the judge's OpenAI-compatible endpoint (DeepEyes serves Qwen2.5-72B-Instruct
            with vLLM), e.g. ``http://judge-host:18901/v1``.
        judge_api_key_env (`str`, defaults to `"OPENAI_API_KEY"`):
            Environment variable holding the judge endpoint's API key.
        judge_max_workers (`int`, defaults to `16`):
            Judge requests in flight at once (one per distinct answer of a batch).
        answer_column (`str`, defaults to `"answer"`):
            Dataset column holding the reference answer.
        question_column (`str`, defaults to `"question"`):
            Dataset column holding the question re-asked with the crops; without it, the text of the
            prompt's last user message is used.
        image_column (`str`, defaults to `"image"`):
            Dataset column holding the full image (``"images"``, a list, is used when this one is absent).
        no_reference (`str`, defaults to `"own_answer"`):
            For rows without a reference answer: ``"own_answer"`` compares with the rollout's own final
            answer (annotation-free), ``"skip"`` leaves the row out of both SCCM rewards (``None``).
        minimality_measure (`str`, defaults to `"union_area"`):
            ``"union_area"``: area of the union of the crops (overlaps counted once);
            ``"largest_crop"``: area of the largest crop.
        minimality_requires_sufficiency (`bool`, defaults to `True`):
            Grant ``r_m`` only when ``r_s = 1``; otherwise a single tiny crop would be a trivial optimum.
        no_crop_reward (`float` or `None`, defaults to `0.0`):
            ``r_s`` and ``r_m`` of a rollout without any valid crop; ``None`` leaves such rollouts out of
            the two SCCM rewards (TRL then ignores them for these columns).
        sufficiency_batch_size (`int`, defaults to `8`):
            Sufficiency queries answered per ``generate`` call.
        sufficiency_max_new_tokens (`int`, defaults to `32`):
            Token budget of a sufficiency answer.
        sufficiency_prompt (`str`):
            Text placed after the crops in the sufficiency query; must contain ``{question}``.
        box_coords (`str`, defaults to `"auto"`):
            How the zoom-in tool reads ``bbox_2d``: ``"absolute"`` pixels (Qwen2.5-VL),
            ``"normalized_1000"`` (Qwen3-VL), or ``"auto"`` (chosen from the model's ``model_type``).
        box_min_side (`int`, defaults to `30`):
            Boxes with a side of at most this many pixels are refused (DeepEyes' rule).
        box_max_aspect_ratio (`float`, defaults to `100.0`):
            Boxes more elongated than this are refused (DeepEyes' rule).
    """

    sufficiency_weight: float = field(
        default=1.0, metadata={"help": "Weight of the sufficiency reward."}
    )
    minimality_weight: float = field(
        default=0.5, metadata={"help": "Weight of the minimality reward."}
    )
    answerer: str = field(
        default="policy",
        metadata={"help": "Who answers the sufficiency queries.", "choices": list(ANSWERERS)},
    )
    answerer_model: str | None = field(
        default=None, metadata={"help": "Local model path or served model name of the answerer."}
    )
    answerer_base_url: str | None = field(
        default=None, metadata={"help": "Base URL of the OpenAI-compatible answerer endpoint."}
    )
    answerer_api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Environment variable with the endpoint's API key."},
    )
    answer_match: str = field(
        default="exact",
        metadata={
            "help": "'exact', 'choice', 'judge' (judge_model) or 'package.module:function' matcher."
        },
    )
    judge_model: str | None = field(
        default=None, metadata={"help": "Served model name or local model of the LLM judge."}
    )
    judge_base_url: str | None = field(
        default=None, metadata={"help": "Base URL of the judge's OpenAI-compatible endpoint."}
    )
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Environment variable with the judge endpoint's API key."},
    )
    judge_max_workers: int = field(default=16, metadata={"help": "Judge requests in flight."})
    answer_column: str = field(default="answer", metadata={"help": "Column of reference answers."})
    question_column: str = field(default="question", metadata={"help": "Column of questions."})
    image_column: str = field(default="image", metadata={"help": "Column of full images."})
    no_reference: str = field(
        default="own_answer",
        metadata={"help": "Rows without reference.", "choices": list(NO_REFERENCE_MODES)},
    )
    minimality_measure: str = field(
        default="union_area",
        metadata={"help": "Area measure of the crops.", "choices": list(MINIMALITY_MEASURES)},
    )
    minimality_requires_sufficiency: bool = field(
        default=True, metadata={"help": "Grant the minimality reward only to sufficient rollouts."}
    )
    no_crop_reward: float | None = field(
        default=0.0, metadata={"help": "SCCM rewards of a rollout without crops (None: left out)."}
    )
    sufficiency_batch_size: int = field(default=8, metadata={"help": "Queries per generate call."})
    sufficiency_max_new_tokens: int = field(
        default=32, metadata={"help": "Token budget of a sufficiency answer."}
    )
    sufficiency_prompt: str = field(
        default=DEFAULT_SUFFICIENCY_PROMPT,
        metadata={"help": "Text after the crops in a sufficiency query; contains {question}."},
    )
    box_coords: str = field(
        default="auto", metadata={"help": "Coordinates of bbox_2d.", "choices": list(BOX_COORDS)}
    )
    box_min_side: int = field(default=30, metadata={"help": "Refuse boxes with a side <= this."})
    box_max_aspect_ratio: float = field(
        default=100.0, metadata={"help": "Refuse boxes more elongated than this."}
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("sufficiency_weight", "minimality_weight"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"SCCMConfig.{name} must be a finite number, got {value!r}")
        for name, choices in (
            ("answerer", ANSWERERS),
            ("no_reference", NO_REFERENCE_MODES),
            ("minimality_measure", MINIMALITY_MEASURES),
            ("box_coords", BOX_COORDS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"SCCMConfig.{name} must be one of {choices}, got {getattr(self, name)!r}"
                )
        if self.answerer != "policy" and not self.answerer_model:
            raise ValueError(
                f"SCCMConfig.answerer_model is required with answerer={self.answerer!r}"
            )
        if self.answerer == "openai" and not self.answerer_base_url:
            raise ValueError("SCCMConfig.answerer_base_url is required with answerer='openai'")
        if self.no_crop_reward is not None and not math.isfinite(self.no_crop_reward):
            raise ValueError(
                f"SCCMConfig.no_crop_reward must be finite or None, got {self.no_crop_reward!r}"
            )
        if self.sufficiency_batch_size < 1:
            raise ValueError(
                f"SCCMConfig.sufficiency_batch_size must be >= 1, got {self.sufficiency_batch_size}"
            )
        if self.sufficiency_max_new_tokens < 1:
            raise ValueError(
                "SCCMConfig.sufficiency_max_new_tokens must be >= 1, "
                f"got {self.sufficiency_max_new_tokens}"
            )
        if "{question}" not in self.sufficiency_prompt:
            raise ValueError(
                "SCCMConfig.sufficiency_prompt must contain the '{question}' placeholder"
            )
        if self.judge_max_workers < 1:
            raise ValueError(
                f"SCCMConfig.judge_max_workers must be >= 1, got {self.judge_max_workers}"
            )
        if self.answer_match == "judge":
            if not self.judge_model:
                raise ValueError("SCCMConfig.judge_model is required with answer_match='judge'")
        else:
            self.answer_matcher()  # fail early on an unknown mode or an unimportable callable
        BoxRules(min_side=self.box_min_side, max_aspect_ratio=self.box_max_aspect_ratio)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SCCMConfig:
        """The config of a known recipe (``PRESETS``), with ``overrides`` on top.

        ``"deepeyes"``: DeepEyes' GRPO recipe (16 rollouts per prompt, 10240 completion
        tokens, 4 tool-calling turns, lr 1e-6, no KL, ``reward_weights=[0.8, 0.2]`` for
        ``reward_funcs=[accuracy, format]``) plus the SCCM rewards; ``"deepeyes-baseline"``:
        the same with SCCM weighted 0 (logged, not optimized); ``"smoke"``: one short CPU
        step to check a setup end to end.
        """
        return cls(**preset_values(name) | overrides)

    def build_judge(self, device: Any = None) -> AnswerJudge:
        """The LLM judge of ``judge_model`` (served at ``judge_base_url``, or loaded locally
        on ``device``), for ``answer_match="judge"`` and the judge accuracy reward."""
        from hf_faithful.sccm.judge import AnswerJudge

        if not self.judge_model:
            raise ValueError("SCCMConfig.judge_model is required to build the judge")
        return AnswerJudge.from_model(
            self.judge_model,
            self.judge_base_url,
            api_key=os.environ.get(self.judge_api_key_env),
            max_workers=self.judge_max_workers,
            device=device,
        )

    def answer_matcher(self) -> Callable[[str, str], bool]:
        """Resolve ``answer_match`` to a ``(prediction, reference) -> bool`` callable
        (``"judge"`` builds the judge: see :meth:`build_judge`)."""
        if self.answer_match == "judge":
            return self.build_judge()
        if ":" not in self.answer_match:
            return get_matcher(self.answer_match)
        module_name, _, attr = self.answer_match.partition(":")
        try:
            func = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(
                f"SCCMConfig.answer_match={self.answer_match!r} cannot be imported: {err}"
            ) from err
        if not callable(func):
            raise ValueError(f"SCCMConfig.answer_match={self.answer_match!r} is not callable")
        return func

    def box_rules(self, model_type: str | None = None) -> BoxRules:
        """The zoom-in tool's box rules; ``model_type`` resolves ``box_coords="auto"``."""
        coords = self.box_coords
        if coords == "auto":
            coords = (
                "normalized_1000" if model_type and model_type.startswith("qwen3") else "absolute"
            )
        return BoxRules(
            coords=coords, min_side=self.box_min_side, max_aspect_ratio=self.box_max_aspect_ratio
        )


def preset_values(name: str) -> dict[str, Any]:
    """The field values of preset ``name`` (a copy), or a ValueError listing the presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown SCCMConfig preset {name!r}; presets: {sorted(PRESETS)}")
    values = copy.deepcopy(PRESETS[name])
    # transformers renamed gradient_checkpointing (deprecated since 5.x): use what it has
    fields = SCCMConfig.__dataclass_fields__
    if "activation_checkpointing" in values and "activation_checkpointing" not in fields:
        values["gradient_checkpointing"] = values.pop("activation_checkpointing")
    return values

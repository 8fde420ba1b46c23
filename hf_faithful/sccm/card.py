"""Model card of an SCCM-trained model, rendered from ``hf_faithful/assets/model_cards/sccm_model.md``.

``SCCMRewardTrainer.create_model_card`` renders it (so ``save_model``, checkpoints and
``push_to_hub`` write it); :func:`sccm_model_card` also works on its own. The card cites
the SCCM paper (the method) and DeepSeekMath (GRPO, the algorithm it runs on).
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from hf_faithful.assets import MODEL_CARDS_DIR
from hf_faithful.sccm.config import SCCMConfig

__all__ = ["GRPO_CITATION", "SCCM_CITATION", "SCCM_PAPER", "sccm_model_card"]

TEMPLATE = MODEL_CARDS_DIR / "sccm_model.md"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TAGS = ("sccm", "grpo", "trl", "visual-reasoning", "thinking-with-images", "hf-faithful")
_SETTINGS = (
    "learning_rate",
    "num_generations",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_steps",
    "num_train_epochs",
    "beta",
    "loss_type",
    "max_completion_length",
    "max_tool_calling_iterations",
    "use_vllm",
    "box_min_side",
    "box_max_aspect_ratio",
    "sufficiency_batch_size",
    "seed",
)
_COORDS = {
    "absolute": "absolute-pixel",
    "normalized_1000": "0-1000 normalized",
    "auto": "absolute-pixel (Qwen2.5-VL) or 0-1000 (Qwen3-VL)",
}

SCCM_CITATION = textwrap.dedent("""\
    @misc{liu2025faithfulness,
        title         = {On the Faithfulness of Visual Thinking: Measurement and Enhancement},
        author        = {Zujing Liu and Junwen Pan and Qi She and Yuan Gao and Gui-Song Xia},
        year          = 2025,
        eprint        = {2510.23482},
        archivePrefix = {arXiv},
        primaryClass  = {cs.CV},
    }""")
GRPO_CITATION = textwrap.dedent("""\
    @article{shao2024deepseekmath,
        title        = {DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models},
        author       = {Zhihong Shao and Peiyi Wang and Qihao Zhu and Runxin Xu and Junxiao Song and Mingchuan Zhang and Y. K. Li and Y. Wu and Daya Guo},
        year         = 2024,
        eprint       = {arXiv:2402.03300},
    }""")
# In the form of TRL's ``Trainer._paper``.
SCCM_PAPER = {
    "title": "On the Faithfulness of Visual Thinking: Measurement and Enhancement",
    "id": "2510.23482",
    "citation": SCCM_CITATION,
}


def _on_hub(name: str) -> bool:
    """Whether ``name`` reads as a Hub repo id (not a local path)."""
    return bool(_REPO_ID.match(name)) and not Path(name).exists()


def _citation_section() -> str:
    return (
        "## Citation\n\n"
        "SCCM, the method this model was trained with:\n\n"
        f"```bibtex\n{SCCM_CITATION}\n```\n\n"
        "GRPO, the reinforcement-learning algorithm SCCM's rewards are optimized with:\n\n"
        f"```bibtex\n{GRPO_CITATION}\n```\n"
    )


def sccm_model_card(
    args: SCCMConfig,
    *,
    base_model: str | None,
    user_rewards: list[tuple[str, float]] | None = None,
    results: dict[str, Any] | None = None,
    dataset: str | None = None,
    datasets: Iterable[str] | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    tags: Iterable[str] | None = None,
    box_coords: str | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Card of a model trained with ``SCCMRewardTrainer`` under ``args``.

    Args:
        base_model: Hub id (linked, and set as ``base_model`` metadata), local path, or None
            when the model was built in memory.
        user_rewards: ``(name, weight)`` of the user's own reward functions.
        results: final training metrics to show (e.g. ``rewards/sccm_sufficiency/mean``).
        dataset: a short description of the training data.
        datasets: Hub ids of the training datasets (``datasets`` metadata).
        repo_id: where the model is (or will be) on the Hub; used in the usage snippet.
        model_name: title of the card (defaults to the repo name, else ``<base>-sccm``).
        tags: more tags, added to the SCCM ones.
        box_coords: the coordinates the tool read (``args.box_coords`` resolved for the model).
    """
    base_model = base_model or None
    on_hub = base_model is not None and _on_hub(base_model)
    if model_name is None:
        model_name = (
            repo_id.split("/")[-1]
            if repo_id
            else f"{Path(base_model).name}-sccm"
            if base_model
            else "sccm-model"
        )
    card_data = ModelCardData(
        base_model=base_model if on_hub else None,
        datasets=sorted({d for d in datasets or [] if _on_hub(d)}) or None,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=list(dict.fromkeys([*_TAGS, *(tags or [])])),
        model_name=model_name,
    )
    answerer = {
        "policy": "the policy itself",
        "local": f"the local model `{args.answerer_model}`",
        "openai": f"`{args.answerer_model}` behind an OpenAI-compatible endpoint",
    }[args.answerer]
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path or TEMPLATE),
        model_name=model_name,
        base_model=base_model or "a model built in memory (no name or path recorded)",
        base_model_link=f"https://huggingface.co/{base_model}" if on_hub else None,
        dataset=dataset,
        user_rewards=list(user_rewards or []),
        sufficiency_weight=args.sufficiency_weight,
        minimality_weight=args.minimality_weight,
        answerer=answerer,
        answer_match=f"judge ({args.judge_model})"
        if args.answer_match == "judge"
        else args.answer_match,
        minimality_measure="area of the union of the crops"
        if args.minimality_measure == "union_area"
        else "area of the largest crop",
        minimality_requires_sufficiency=args.minimality_requires_sufficiency,
        no_crop_reward="no reward (left out)"
        if args.no_crop_reward is None
        else args.no_crop_reward,
        results={k: round(v, 4) if isinstance(v, float) else v for k, v in (results or {}).items()},
        settings={name: getattr(args, name) for name in _SETTINGS},
        box_coords=_COORDS[box_coords or args.box_coords],
        repo_id=repo_id or "path/to/this/folder",
    )
    card.text = card.text.rstrip("\n") + "\n\n" + _citation_section()
    return card

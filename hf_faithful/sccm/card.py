"""Model card of an SCCM-trained model, rendered from ``hf_faithful/assets/model_cards/sccm_model.md``.

Not called by ``SCCMRewardTrainer`` yet: a later issue wires :func:`sccm_model_card` into
``save_model`` / ``push_to_hub``; until then users call it themselves.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from hf_faithful.assets import MODEL_CARDS_DIR
from hf_faithful.sccm.config import SCCMConfig

TEMPLATE = MODEL_CARDS_DIR / "sccm_model.md"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
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


def sccm_model_card(
    args: SCCMConfig,
    *,
    base_model: str,
    user_rewards: list[tuple[str, float]] | None = None,
    results: dict[str, Any] | None = None,
    dataset: str | None = None,
    repo_id: str | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Card of a model trained with ``SCCMRewardTrainer`` under ``args``.

    Args:
        base_model: Hub id (linked, and set as ``base_model`` metadata) or local path.
        user_rewards: ``(name, weight)`` of the user's own reward functions.
        results: final training metrics to show (e.g. ``rewards/sccm_sufficiency/mean``).
        dataset: a short description of the training data.
    """
    on_hub = bool(_REPO_ID.match(base_model)) and not Path(base_model).exists()
    model_name = repo_id.split("/")[-1] if repo_id else f"{Path(base_model).name}-sccm"
    card_data = ModelCardData(
        base_model=base_model if on_hub else None,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=["sccm", "grpo", "trl", "visual-reasoning", "thinking-with-images", "hf-faithful"],
        model_name=model_name,
    )
    coords = (
        args.box_coords
        if args.box_coords != "auto"
        else "absolute-pixel (Qwen2.5-VL) or 0-1000 (Qwen3-VL)"
    )
    answerer = {
        "policy": "the policy itself",
        "local": f"the local model `{args.answerer_model}`",
        "openai": f"`{args.answerer_model}` behind an OpenAI-compatible endpoint",
    }[args.answerer]
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or TEMPLATE),
        model_name=model_name,
        base_model=base_model,
        base_model_link=f"https://huggingface.co/{base_model}" if on_hub else None,
        dataset=dataset,
        user_rewards=list(user_rewards or []),
        sufficiency_weight=args.sufficiency_weight,
        minimality_weight=args.minimality_weight,
        answerer=answerer,
        answer_match=args.answer_match,
        minimality_measure="area of the union of the crops"
        if args.minimality_measure == "union_area"
        else "area of the largest crop",
        minimality_requires_sufficiency=args.minimality_requires_sufficiency,
        no_crop_reward="no reward (left out)"
        if args.no_crop_reward is None
        else args.no_crop_reward,
        results={k: round(v, 4) if isinstance(v, float) else v for k, v in (results or {}).items()},
        settings={name: getattr(args, name) for name in _SETTINGS},
        box_coords=coords,
        repo_id=repo_id or "path/to/this/folder",
    )

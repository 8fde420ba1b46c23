"""The shipped prompts (``hf_faithful/assets/faithfulness/prompts/*.txt``, documented in the
README there). Every user of a prompt also accepts the user's own text."""

from __future__ import annotations

from hf_faithful.assets import PROMPTS_DIR

__all__ = ["PROMPT_NAMES", "load_prompt"]

PROMPT_NAMES = (
    "deepeyes_system",
    "judge_agreement",
    "judge_reliability",
    "judge_sufficiency",
    "rewrite_reasoning",
    "zoom_system",
)


def load_prompt(name: str) -> str:
    """Text of the shipped prompt ``name`` (one of ``PROMPT_NAMES``)."""
    if name not in PROMPT_NAMES:
        raise ValueError(f"prompt name must be one of {PROMPT_NAMES}, got {name!r}")
    return (PROMPTS_DIR / f"{name}.txt").read_text(encoding="utf-8").strip()

"""The one place that knows where package data lives (``hf_faithful/assets/``).

Every module that reads bundled files asks here, so a moved folder is one edit.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

REFERENCE_MODEL_DIR = ASSETS_DIR / "reference-model"
REFERENCE_VLM_DIR = ASSETS_DIR / "reference-vlm"
DATA_DIR = ASSETS_DIR / "data"
TASKS_DIR = ASSETS_DIR / "tasks"
MODEL_CARDS_DIR = ASSETS_DIR / "model_cards"
FAITHFULNESS_DIR = ASSETS_DIR / "faithfulness"
PROMPTS_DIR = FAITHFULNESS_DIR / "prompts"

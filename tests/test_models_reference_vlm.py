"""The bundled reference VLM: it loads, its card tells the truth, and its tool use is real."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_faithful.models.reference_vlm import REFERENCE_VLM_DIR, load_reference_vlm

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_reference_vlm.py"


@pytest.fixture(scope="module")
def reference_vlm():
    return load_reference_vlm()


def _script():
    spec = importlib.util.spec_from_file_location("train_reference_vlm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundled_model_is_a_small_real_qwen3_vl(reference_vlm):
    model, processor = reference_vlm
    assert model.config.model_type == "qwen3_vl"
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    size = sum(f.stat().st_size for f in REFERENCE_VLM_DIR.iterdir() if f.is_file())
    assert size <= 30 * 1024 * 1024  # ships as package data
    assert len(processor.tokenizer) == model.config.text_config.vocab_size
    # every image (whole view, crop) is seen at most 128x128: 16 vision tokens
    assert processor.image_processor.size["longest_edge"] == 128 * 128


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model"):
        load_reference_vlm(tmp_path)


def test_card_records_data_command_seed_and_figures():
    card = ModelCard.load(REFERENCE_VLM_DIR / "README.md")
    meta = json.loads((REFERENCE_VLM_DIR / "training_meta.json").read_text())
    assert "scripts/train_reference_vlm.py" in card.text
    assert f"seed {meta['seed']}" in card.text
    zoom = meta["test_figures"]["zoom_needed"]
    assert f"{zoom['accuracy_with_tools']:.3f}" in card.text
    assert f"{zoom['chance']:.3f}" in card.text  # chance beside every accuracy
    assert card.data.pipeline_tag == "image-text-to-text"


def test_recorded_tool_use_meets_the_bar():
    """What the card claims on the test split: zooming is worth 25 points and reaches 80%."""
    zoom = json.loads((REFERENCE_VLM_DIR / "training_meta.json").read_text())["test_figures"][
        "zoom_needed"
    ]
    assert zoom["accuracy_with_tools"] >= 0.8
    assert zoom["accuracy_with_tools"] >= zoom["accuracy_without_tools"] + 0.25
    assert zoom["n"] >= 100


def test_zooming_beats_the_whole_view_on_a_fixed_sample(reference_vlm):
    """A property of the shipped artifact, re-measured: on the first 40 test questions its
    zoom-in rollouts answer zoom-needed questions better than its answers from the whole
    image alone, and it calls the tool there."""
    model, processor = reference_vlm
    figures = _script().measure(model, processor, n=40, seed=0)
    zoom = figures["zoom_needed"]
    assert zoom["n"] >= 20
    assert zoom["accuracy_with_tools"] > zoom["accuracy_without_tools"] + 0.2
    assert zoom["tool_call_rate"] > 0.9 and zoom["mean_crop_iou"] > 0.3

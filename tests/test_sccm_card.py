"""The model card of an SCCM-trained model: metadata, reward table, settings, local bases."""

from __future__ import annotations

import re

import yaml
from huggingface_hub import ModelCard, metadata_load

from hf_faithful.sccm.card import sccm_model_card
from hf_faithful.sccm.config import SCCMConfig


def _front_matter(path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_sccm_model_card(tmp_path):
    args = SCCMConfig(output_dir=str(tmp_path / "run"), use_cpu=True, bf16=False)
    card = sccm_model_card(
        args,
        base_model="Qwen/Qwen2.5-VL-3B-Instruct",
        user_rewards=[("accuracy", 1.0)],
        results={"rewards/sccm_sufficiency/mean": 0.612345},
        dataset="DeepEyes visual search, 1k questions",
    )
    card.save(tmp_path / "README.md")
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.base_model == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert data.pipeline_tag == "image-text-to-text"
    assert {"sccm", "grpo", "trl"} <= set(data.tags)
    assert metadata_load(tmp_path / "README.md") == _front_matter(tmp_path / "README.md")
    body = ModelCard.load(tmp_path / "README.md").text
    assert f"| sccm_sufficiency | {args.sufficiency_weight} |" in body
    assert f"| sccm_minimality | {args.minimality_weight} |" in body
    assert "| accuracy | 1.0 | user-supplied |" in body
    assert "0.6123" in body and "DeepEyes visual search" in body
    assert not re.search(r"\{\{|\{%", body)


def test_model_card_renders(tmp_path):
    config = SCCMConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        sufficiency_weight=2.0,
        no_crop_reward=None,
        max_steps=10,
    )
    card = sccm_model_card(
        config,
        base_model="Qwen/Qwen2.5-VL-7B-Instruct",
        user_rewards=[("accuracy", 1.0)],
        results={"rewards/sccm_sufficiency/mean": 0.41234567},
        dataset="DeepEyes 47k",
        repo_id="me/qwen-sccm",
    )
    text = str(card)
    assert card.data.base_model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert "sccm" in card.data.tags and card.data.pipeline_tag == "image-text-to-text"
    assert "| sccm_sufficiency | 2.0 |" in text and "| accuracy | 1.0 | user-supplied |" in text
    assert "| rewards/sccm_sufficiency/mean | 0.4123 |" in text
    assert "no reward (left out)" in text and "| max_steps | 10 |" in text
    assert 'from_pretrained("me/qwen-sccm")' in text
    local = sccm_model_card(config, base_model=str(tmp_path))
    assert local.data.base_model is None and f"`{tmp_path}`" in str(local)


def test_card_cites_sccm_as_the_method_and_grpo_as_the_algorithm(tmp_path):
    args = SCCMConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    card = sccm_model_card(
        args,
        base_model=None,  # built in memory: no name or path recorded
        datasets=["me/zoom-vqa", str(tmp_path)],  # a local path is not a Hub dataset
        tags=["mine"],
        box_coords="normalized_1000",
    )
    text = str(card)
    assert card.data.base_model is None and card.data.model_name == "sccm-model"
    assert card.data.datasets == ["me/zoom-vqa"] and "mine" in card.data.tags
    assert (
        "On the Faithfulness of Visual Thinking" in text and "eprint        = {2510.23482}" in text
    )
    citation = text.split("## Citation", 1)[1]
    assert citation.index("2510.23482") < citation.index("shao2024deepseekmath")
    assert "SCCM, the method" in citation and "GRPO, the reinforcement-learning" in citation
    assert "(0-1000 normalized coordinates)" in text
    assert "None" not in text.split("## Rewards")[0]  # no "None" title or base model

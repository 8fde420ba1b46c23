"""Model cards rendered by the code that writes them, read back with huggingface_hub.

The Hub reads a card's YAML front matter: ``base_model``, ``tags``, ``pipeline_tag`` and
the ``model-index`` evaluation results. Each card is saved, loaded with
``ModelCard.load`` and its metadata parsed back, so a template that breaks the YAML or
drops a field fails here rather than on the Hub.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from hf_faithful.pruning import PolicyGradientPruner, PruningConfig
from hf_faithful.testing.tiny_llama import byte_tokenizer, tiny_causal_lm

BASE = "meta-llama/Llama-3.2-1B"
TEXT = "The quick brown fox jumps over the lazy dog. " * 200


def _front_matter(path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture(scope="module")
def pruned_folder(tmp_path_factory):
    """A tiny Llama pruned one-shot and saved by the pruner (card included)."""
    model = tiny_causal_lm("llama")
    pruner = PolicyGradientPruner(
        model,
        byte_tokenizer(),
        PruningConfig(
            sparsity=0.5, max_steps=0, seq_len=32, init_num_samples=4, extra={"base_model": BASE}
        ),
    )
    pruner.fit(TEXT, progress=False)
    folder = tmp_path_factory.mktemp("pruned")
    pruned = pruner.save_pretrained(folder, perplexity={"before": 20.5, "after": 31.25})
    return folder, model, pruned


def test_pruned_model_card_metadata(pruned_folder):
    folder, _, _ = pruned_folder
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.base_model == BASE
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert {"pruned", "structured-pruning", "hf-faithful"} <= set(data.tags)
    (result,) = data.eval_results
    assert (result.metric_type, result.metric_value) == ("perplexity", 31.25)
    assert (result.dataset_type, result.dataset_split) == ("wikitext", "test")
    assert result.task_type == "text-generation"

    # the raw YAML is what the Hub parses: model-index round-trips to the same result
    meta = metadata_load(folder / "README.md")
    assert meta == _front_matter(folder / "README.md")
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == data.model_name and results == data.eval_results


def test_pruned_model_card_body(pruned_folder):
    folder, model, pruned = pruned_folder
    body = ModelCard.load(folder / "README.md").text
    config = pruned.config
    for i, (q, kv, width) in enumerate(
        zip(
            config.num_attention_heads_per_layer,
            config.num_key_value_heads_per_layer,
            config.intermediate_size_per_layer,
        )
    ):
        assert f"| {i} | {q} | {kv} | {width} |" in body
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    assert f"| parameters | {before:,} " in body and f"| {after:,} " in body
    assert "| 20.500 | 31.250 |" in body
    assert f"https://huggingface.co/{BASE}" in body
    assert "from_pretrained(" in body and "{{" not in body  # every placeholder filled


def test_pruned_model_card_of_a_local_base_has_no_hub_link(tmp_path):
    from hf_faithful.pruning.card import pruned_model_card

    model = tiny_causal_lm("llama")
    pruner = PolicyGradientPruner(
        model,
        byte_tokenizer(),
        PruningConfig(sparsity=0.25, max_steps=0, seq_len=32, init_num_samples=4),
    )
    pruner.fit(TEXT, progress=False)
    config = pruner.compress().config
    config.pruning["base_model"] = str(tmp_path)  # a local folder, not a Hub id
    card = pruned_model_card(config, params_before=10, params_after=5)
    card.save(tmp_path / "README.md")
    meta = metadata_load(tmp_path / "README.md")
    assert "base_model" not in meta and "model-index" not in meta  # nothing to link or report
    assert f"`{tmp_path}`" in ModelCard.load(tmp_path / "README.md").text


@pytest.mark.parametrize("space", ["pruning_explorer", "faithfulness_inspector"])
def test_space_cards(space):
    import gradio
    from huggingface_hub import SpaceCard

    folder = Path(__file__).resolve().parent.parent / "spaces" / space
    data = SpaceCard.load(folder / "README.md").data
    assert data.sdk == "gradio"
    assert data.sdk_version.split(".")[0] == gradio.__version__.split(".")[0] == "6"
    assert (folder / data.app_file).is_file()
    assert "hf-faithful" in (folder / "requirements.txt").read_text(encoding="utf-8")

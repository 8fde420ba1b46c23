import json

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_faithful.evaluation.perplexity import perplexity
from hf_faithful.models import REFERENCE_MODEL_DIR, load_causal_lm


def test_reference_model_is_a_small_gqa_llama():
    model = AutoModelForCausalLM.from_pretrained(REFERENCE_MODEL_DIR)
    cfg = model.config
    assert cfg.model_type == "llama"
    assert cfg.num_hidden_layers >= 4
    assert cfg.num_key_value_heads < cfg.num_attention_heads
    weights = REFERENCE_MODEL_DIR / "model.safetensors"
    assert weights.stat().st_size <= 20 * 1024 * 1024
    tok = AutoTokenizer.from_pretrained(REFERENCE_MODEL_DIR)
    assert len(tok) == cfg.vocab_size


def test_model_card_records_data_command_seed_and_perplexity():
    card = ModelCard.load(REFERENCE_MODEL_DIR / "README.md")
    meta = json.loads((REFERENCE_MODEL_DIR / "training_meta.json").read_text())
    assert "train_reference_model.py" in card.text
    assert f"seed {meta['seed']}" in card.text
    assert f"{meta['wikitext2_test_ppl']:.2f}" in card.text
    assert "Gutenberg" in card.text and "WikiText-2" in card.text


def test_recorded_perplexity_is_reproduced(reference_model):
    model, tok = reference_model
    meta = json.loads((REFERENCE_MODEL_DIR / "training_meta.json").read_text())
    ppl = perplexity(model, tok, seq_len=128, batch_size=16, progress=False)
    assert ppl == pytest.approx(meta["wikitext2_test_ppl"], rel=1e-4)
    assert ppl < 150  # far better than the ~4096 of an untrained model


def test_load_causal_lm_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: ./no/such/model"):
        load_causal_lm("./no/such/model")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_causal_lm(str(tmp_path))


def test_greedy_generation_uses_the_kv_cache(reference_model):
    model, tok = reference_model
    ids = tok("The lobster", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 8

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


# ------------------------------------------------------------------------ GGUF input
def _permute(w, n_head):
    """llama.cpp's q/k row order (convert_hf_to_gguf); transformers undoes it on load."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_tiny_gguf(model, tokenizer, path):
    """A llama GGUF file (float32 tensors, byte-level vocabulary) of a tiny model."""
    gguf = pytest.importorskip("gguf")
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_file_type(0)  # all float32
    tokens = [f"<unused{i}>" for i in range(c.vocab_size)]
    for token, index in tokenizer.get_vocab().items():
        tokens[index] = token
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if i >= 256 else 1 for i in range(c.vocab_size)])
    w.add_token_scores([0.0] * c.vocab_size)
    w.add_bos_token_id(c.bos_token_id)
    w.add_eos_token_id(c.eos_token_id)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    for i in range(c.num_hidden_layers):
        layer = f"model.layers.{i}."
        for gguf_name, hf_name in names.items():
            w.add_tensor(f"blk.{i}.{gguf_name}.weight", sd[f"{layer}{hf_name}.weight"])
        q = sd[f"{layer}self_attn.q_proj.weight"]
        k = sd[f"{layer}self_attn.k_proj.weight"]
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(q, c.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute(k, c.num_key_value_heads))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    from hf_faithful.testing.tiny_llama import byte_tokenizer, tiny_causal_lm

    pytest.importorskip("gguf")
    model, tokenizer = tiny_causal_lm("llama"), byte_tokenizer()
    path = write_tiny_gguf(model, tokenizer, tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    return path, model, tokenizer


def test_gguf_file_loads_as_a_plain_model(tiny_gguf, tmp_path):
    path, source, tokenizer = tiny_gguf
    model, tok = load_causal_lm(str(path))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model.config, "quantization_config", None) is None
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source(ids).logits, rtol=0, atol=1e-5)
    assert tok("a tiny text")["input_ids"] == tokenizer("a tiny text")["input_ids"]
    model.save_pretrained(tmp_path / "saved")  # refused for the gguf-marked original
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, source(ids).logits, rtol=0, atol=1e-5)


def test_prune_command_takes_a_gguf_file(tiny_gguf, tmp_path):
    from hf_faithful.cli import main

    path, _, _ = tiny_gguf
    calibration = tmp_path / "calib.txt"
    calibration.write_text("A tiny calibration text for pruning. " * 30)
    out = tmp_path / "pruned"
    args = ["prune", str(path), "--calibration", str(calibration), "--output", str(out)]
    args += ["--method", "flap", "--seq-len", "32", "--init-num-samples", "4", "--no-final-eval"]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert "tiny.gguf" in config["pruning"]["base_model"] and config["down_proj_bias"]
    assert AutoModelForCausalLM.from_pretrained(out) is not None


def test_gguf_errors_name_the_file_and_the_extra(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="GGUF file does not exist"):
        load_causal_lm(str(tmp_path / "missing.gguf"))
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)  # not installed
    with pytest.raises(ImportError, match=r"hf-faithful\[gguf\]"):
        load_causal_lm(str(tmp_path / "model.gguf"))

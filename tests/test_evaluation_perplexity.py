import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_faithful.evaluation.perplexity import chunk_token_ids, perplexity, tokenize_text


def tiny_llama(vocab_size: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(cfg).eval()


def test_chunking_is_non_overlapping_and_drops_the_tail():
    ids = torch.arange(10)
    chunks = chunk_token_ids(ids, 4)
    assert chunks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_perplexity_matches_a_hand_computed_loop(reference_model):
    _, tok = reference_model
    model = tiny_llama(len(tok))
    texts = ["The lobster is blue .", "It turns red when cooked ."] * 40
    ids = tok("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    seq = 16
    losses = []
    with torch.no_grad():
        for i in range(len(ids) // seq):
            chunk = torch.tensor([ids[i * seq : (i + 1) * seq]])
            losses.append(model(input_ids=chunk, labels=chunk).loss.item())
    expected = math.exp(sum(losses) / len(losses))
    got = perplexity(model, tok, texts, seq_len=seq, batch_size=3, progress=False)
    assert got == pytest.approx(expected, rel=1e-5)
    # pre-tokenized input gives the same number
    again = perplexity(model, input_ids=torch.tensor(ids), seq_len=seq, progress=False)
    assert again == pytest.approx(expected, rel=1e-5)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(reference_model):
    _, tok = reference_model
    model = tiny_llama(64)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # uniform next-token distribution
    ids = torch.randint(0, 64, (200,))
    assert perplexity(model, input_ids=ids, seq_len=50, progress=False) == pytest.approx(
        64, rel=1e-4
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": ""}, "text is empty"),
        ({"text": "   \n"}, "text is empty"),
        ({"text": "too short"}, "shorter than one chunk"),
        ({"text": "some text " * 100, "seq_len": 1}, "seq_len"),
        ({"text": "some text " * 100, "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_names_the_problem(reference_model, kwargs, message):
    model, tok = reference_model
    with pytest.raises(ValueError, match=message):
        perplexity(model, tok, progress=False, **kwargs)


def test_tokenize_text_joins_with_blank_lines(reference_model):
    _, tok = reference_model
    joined = tokenize_text(tok, ["a b", "c d"])
    assert tok.decode(joined) == "a b\n\nc d"

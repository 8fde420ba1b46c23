"""Tiny Llama-family causal LMs built from configs, fully offline.

Pruning tests need real transformers models of every supported architecture
(Llama, Mistral, Qwen2, Qwen3, grouped-query attention included) that run in
milliseconds on CPU. Weights are random; a byte-level tokenizer (256 byte symbols,
no merges) makes text calibration and ``save_pretrained`` work end to end.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")

_COMMON = {
    "vocab_size": 260,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 256,
    "bos_token_id": 256,
    "eos_token_id": 257,
    "pad_token_id": 258,
}
# Architecture-specific features that the pruning code must respect.
_EXTRA = {
    "llama": {},
    "mistral": {"sliding_window": 64},
    "qwen2": {},  # q/k/v biases
    "qwen3": {"tie_word_embeddings": True},  # q_norm / k_norm, tied embeddings
}


def tiny_config(architecture: str = "llama", **overrides):
    """Config of a tiny model of ``architecture`` (one of ``ARCHITECTURES``)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    kwargs = {**_COMMON, **_EXTRA[architecture], **overrides}
    return AutoConfig.for_model(architecture, **kwargs)


def tiny_causal_lm(architecture: str = "llama", seed: int = 0, **overrides) -> PreTrainedModel:
    """A randomly initialized tiny causal LM in float32, eval mode, eager-free (sdpa)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(architecture, **overrides))
    if architecture == "qwen2":
        # Qwen2's q/k/v biases start at zero; make them matter in the tests.
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (
                    layer.self_attn.q_proj,
                    layer.self_attn.k_proj,
                    layer.self_attn.v_proj,
                ):
                    proj.bias.normal_(0, 0.1)
    return model.eval()


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (ids 0-255 are bytes) with BOS/EOS/PAD at 256-258."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=1_000_000,
    )


def trained_tiny_causal_lm(
    text: str, architecture: str = "llama", steps: int = 150, seq_len: int = 32, seed: int = 0
) -> tuple[PreTrainedModel, torch.Tensor]:
    """A tiny model fitted for a few seconds on ``text`` (byte tokens), and the chunks.

    Random weights give every mask the same loss; a little training gives pruning
    something to find.
    """
    model = tiny_causal_lm(architecture, seed=seed)
    ids = byte_tokenizer()(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    chunks = ids[: ids.numel() // seq_len * seq_len].view(-1, seq_len)
    if chunks.shape[0] == 0:
        raise ValueError(f"text is shorter than seq_len={seq_len} tokens")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = chunks[torch.randint(0, chunks.shape[0], (8,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model.eval(), chunks

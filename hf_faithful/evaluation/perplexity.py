"""Perplexity with the pruning paper's protocol (arXiv 2406.10576, after SparseGPT/Wanda).

Texts are joined with "\\n\\n" and tokenized once; the token stream is cut into
non-overlapping chunks of ``seq_len`` tokens (the incomplete tail is dropped) and
PPL = exp(mean over chunks of the chunk's mean next-token loss). Chunks carry no
BOS token, exactly like the reference implementations, so numbers are comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm


def chunk_token_ids(input_ids: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Cut a 1-D token stream into ``[n_chunks, seq_len]`` non-overlapping chunks."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    ids = input_ids.reshape(-1)
    n_chunks = ids.numel() // seq_len
    if n_chunks == 0:
        raise ValueError(
            f"text is shorter than one chunk: {ids.numel()} tokens < seq_len={seq_len}"
        )
    return ids[: n_chunks * seq_len].view(n_chunks, seq_len)


def tokenize_text(tokenizer, text: str | Sequence[str]) -> torch.Tensor:
    """Join texts with "\\n\\n" and tokenize once, without special tokens."""
    if isinstance(text, str):
        joined = text
    else:
        texts = list(text)
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("text must be a string or a sequence of strings")
        joined = "\n\n".join(texts)
    if not joined.strip():
        raise ValueError("text is empty")
    # verbose=False: the stream is longer than model_max_length by design (it is chunked).
    ids = tokenizer(joined, add_special_tokens=False, return_tensors="pt", verbose=False)[
        "input_ids"
    ]
    return ids.reshape(-1)


@torch.no_grad()
def chunk_losses(
    model: torch.nn.Module,
    chunks: torch.Tensor,
    *,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Mean next-token loss of every chunk (float64, on CPU)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.empty(chunks.shape[0], dtype=torch.float64)
    try:
        for start in tqdm(
            range(0, chunks.shape[0], batch_size),
            desc="perplexity",
            disable=not progress,
            unit="batch",
        ):
            batch = chunks[start : start + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
            )
            out[start : start + batch.shape[0]] = (
                loss.view(batch.shape[0], -1).mean(1).double().cpu()
            )
    finally:
        model.train(was_training)
    return out


def perplexity(
    model: torch.nn.Module,
    tokenizer=None,
    text: str | Sequence[str] | None = None,
    *,
    input_ids: torch.Tensor | None = None,
    seq_len: int = 128,
    batch_size: int = 8,
    max_chunks: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> float:
    """Perplexity of ``model`` on ``text`` (or pre-tokenized ``input_ids``).

    With neither ``text`` nor ``input_ids`` it measures WikiText-2 test, the paper's
    benchmark. ``max_chunks`` evaluates only the first chunks (quick checks).
    """
    if input_ids is None:
        if tokenizer is None:
            raise ValueError("tokenizer is required when input_ids is not given")
        if text is None:
            from hf_faithful.corpora import wikitext2_test

            text = wikitext2_test()
        input_ids = tokenize_text(tokenizer, text)
    elif text is not None:
        raise ValueError("pass either text or input_ids, not both")
    chunks = chunk_token_ids(input_ids, seq_len)
    if max_chunks is not None:
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
        chunks = chunks[:max_chunks]
    losses = chunk_losses(model, chunks, batch_size=batch_size, device=device, progress=progress)
    return math.exp(losses.mean().item())

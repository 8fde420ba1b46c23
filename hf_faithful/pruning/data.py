"""Calibration data for the pruner: token chunks, the batch of each step, eval ids."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _tokenize(tokenizer, text, purpose: str) -> torch.Tensor:
    if tokenizer is None:
        raise ValueError(f"a tokenizer is required to {purpose} on text")
    from hf_faithful.evaluation.perplexity import tokenize_text

    return tokenize_text(tokenizer, text)


def token_chunks(data, tokenizer=None, seq_len: int = 128) -> torch.Tensor:
    """Token chunks ``[n, seq_len]`` from texts, a ``datasets.Dataset`` or token ids.

    Texts are joined with "\\n\\n", tokenized once and cut into non-overlapping
    chunks (the perplexity protocol); a 2-D tensor is used as it is.
    """
    if hasattr(data, "column_names"):  # datasets.Dataset
        if "input_ids" in data.column_names:
            data = torch.tensor([t for row in data["input_ids"] for t in row], dtype=torch.long)
        elif "text" in data.column_names:
            data = list(data["text"])
        else:
            raise ValueError(
                f"calibration dataset needs a 'text' or 'input_ids' column, has {data.column_names}"
            )
    if isinstance(data, list | tuple) and data and all(torch.is_tensor(t) for t in data):
        data = torch.cat([t.reshape(-1) for t in data]) if data[0].dim() <= 1 else torch.cat(data)
    if isinstance(data, str) or (
        isinstance(data, list | tuple) and data and all(isinstance(t, str) for t in data)
    ):
        data = _tokenize(tokenizer, data, "calibrate")
    if not torch.is_tensor(data):
        raise ValueError(
            "calibration data must be text, a list of texts, a datasets.Dataset with a 'text' "
            f"or 'input_ids' column, or a tensor of token ids; got {type(data).__name__}"
        )
    data = data.long()
    if data.dim() == 2:
        if data.shape[1] < 2 or data.shape[0] == 0:
            raise ValueError(
                f"token batches must have shape [n, seq_len>=2], got {tuple(data.shape)}"
            )
        return data
    if data.dim() != 1:
        raise ValueError(f"token ids must be 1-D or 2-D, got shape {tuple(data.shape)}")
    n = data.numel() // seq_len
    if n == 0:
        raise ValueError(
            f"calibration data has {data.numel()} tokens, fewer than one sequence of "
            f"seq_len={seq_len}"
        )
    return data[: n * seq_len].view(n, seq_len)


def epoch_order(num_chunks: int, seed: int, epoch: int) -> torch.Tensor:
    """Shuffled chunk order of ``epoch``: a fixed function of (seed, epoch), so a
    resumed run replays the same batches."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_chunks, generator=gen)


def eval_token_ids(data, tokenizer=None) -> torch.Tensor:
    """1-D token ids from text (or texts) or token ids, for perplexity evaluation."""
    if isinstance(data, str) or (isinstance(data, Sequence) and not torch.is_tensor(data)):
        return _tokenize(tokenizer, data, "evaluate")
    return torch.as_tensor(data).reshape(-1)

"""What a pruning run hands over: hard masks, compressed sizes, provenance, a saved folder.

These are functions of the final scores and the config, not of the training loop, so
they live apart from it; the pruner's ``hard_masks``, ``layer_sizes``, ``provenance``,
``save_pretrained`` and ``push_to_hub`` are their public names. A saved folder holds
the compressed model (reloadable with ``from_pretrained``), the tokenizer, the prune
state (so ``PolicyGradientPruner.from_pretrained`` can resume) and a model card.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from hf_faithful.pruning.config import PruningConfig
from hf_faithful.pruning.scores import hard_mask
from hf_faithful.pruning.state import STATE_FILE, save_prune_state
from hf_faithful.pruning.units import PrunableLayer


def final_masks(
    config: PruningConfig,
    scores_heads: torch.Tensor,
    scores_channels: torch.Tensor,
    head_sizes: list[int],
    channel_sizes: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """0/1 masks (heads, channels; flat, layer order) keeping the top scores.

    Always at the final sparsity (not the warm-up ramp's), and all ones for a pool
    that ``config.target`` leaves alone.
    """
    keep = 1.0 - config.sparsity
    per_layer = config.budget == "layer"
    heads = (
        hard_mask(
            scores_heads,
            head_sizes,
            keep,
            per_layer=per_layer,
            min_per_layer=config.min_heads_per_layer,
        )
        if config.target in ("heads", "both")
        else torch.ones(sum(head_sizes))
    )
    channels = (
        hard_mask(scores_channels, channel_sizes, keep, per_layer=per_layer, min_per_layer=0)
        if config.target in ("channels", "both")
        else torch.ones(sum(channel_sizes))
    )
    return heads, channels


def compressed_sizes(
    layers: Sequence[PrunableLayer],
    heads: torch.Tensor,
    channels: torch.Tensor,
    head_sizes: list[int],
    channel_sizes: list[int],
) -> dict[str, list[int]]:
    """Per-layer sizes a model compressed with these masks will have."""
    kv = [int(p.sum()) for p in heads.split(head_sizes)]
    return {
        "num_key_value_heads": kv,
        "num_attention_heads": [n * layer.group_size for n, layer in zip(kv, layers)],
        "intermediate_size": [int(p.sum()) for p in channels.split(channel_sizes)],
    }


def provenance(model: torch.nn.Module, config: PruningConfig, step: int) -> dict[str, Any]:
    """How the pruned model was made; stored in its config and shown on its card."""
    base = getattr(getattr(model, "config", None), "_name_or_path", "") or None
    return {
        "base_model": config.extra.get("base_model", base),
        "method": f"policy_gradient (init={config.init})"
        if config.max_steps
        else f"one-shot {config.init}",
        "sparsity": config.sparsity,
        "target": config.target,
        "budget": config.budget,
        "steps": step,
        "num_samples": config.num_samples,
        "seed": config.seed,
        "library": "hf-faithful",
        "paper": "arXiv:2406.10576",
    }


def write_pruned_folder(
    save_directory: str | os.PathLike,
    pruned: torch.nn.Module,
    *,
    dense_model: torch.nn.Module,
    tokenizer,
    state: tuple[dict[str, torch.Tensor], dict[str, Any]],
    perplexity: dict[str, float] | None = None,
) -> None:
    """Write the compressed model, tokenizer, prune ``state`` and model card.

    ``dense_model`` is only counted, for the card's before/after parameter numbers.
    """
    from hf_faithful.pruning.card import pruned_model_card

    save_directory = Path(save_directory)
    pruned.save_pretrained(save_directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(save_directory)
    save_prune_state(*state, save_directory / STATE_FILE)
    card = pruned_model_card(
        pruned.config,
        params_before=sum(p.numel() for p in dense_model.parameters()),
        params_after=sum(p.numel() for p in pruned.parameters()),
        perplexity=perplexity,
    )
    card.save(save_directory / "README.md")


def push_saved(
    save: Callable[[str], Any],
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str,
) -> str:
    """Run ``save(folder)`` into a temporary folder and upload it; returns the commit URL."""
    from hf_faithful.hub import push_folder

    with tempfile.TemporaryDirectory() as tmp:
        save(tmp)
        return push_folder(
            tmp, repo_id, private=private, token=token, commit_message=commit_message
        )

"""Generation of compressed models whose first layer lost every head (issue 14, 5a).

transformers reads the cached length (positions, the padding mask) from layer 0 of
the KV cache; an empty layer 0 must still record it, or left-padded batched
generation drifts away from the masked model's.
"""

from __future__ import annotations

import pytest
import torch

from hf_faithful.pruning.compress import compress_model
from hf_faithful.pruning.units import UnitMasks, find_prunable_layers
from hf_faithful.testing.tiny_llama import tiny_causal_lm

torch.set_num_threads(1)
PAD = 258
LENGTHS = [9, 5, 3]
NEW = 8


def _left_padded(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(LENGTHS)
    batch = torch.full((len(LENGTHS), width), PAD)
    mask = torch.zeros_like(batch)
    for i, n in enumerate(LENGTHS):
        batch[i, width - n :] = ids[i, :n]
        mask[i, width - n :] = 1
    return batch, mask


def _greedy(model, ids, mask=None):
    # min_new_tokens: no row stops early at EOS, so every row is NEW tokens long
    out = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=NEW,
        min_new_tokens=NEW,
        do_sample=False,
        pad_token_id=PAD,
    )
    return out[:, -NEW:].tolist()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_empty_first_layer_generates_like_the_masked_model(arch):
    model = tiny_causal_lm(arch)
    layers = find_prunable_layers(model)
    heads = torch.tensor([0.0, 0.0, 1.0, 0.0])  # layer 0 loses every head
    channels = (torch.rand(96, generator=torch.Generator().manual_seed(2)) > 0.3).float()
    pruned = compress_model(model, layers, heads, channels)
    assert pruned.config.num_key_value_heads_per_layer == [0, 1]
    ids = torch.randint(0, 256, (3, max(LENGTHS)), generator=torch.Generator().manual_seed(0))
    batch, mask = _left_padded(ids)

    with torch.no_grad():
        # the cache reports the prompt length after prefill
        out = pruned(batch, attention_mask=mask, use_cache=True)
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        assert cache.get_seq_length() == max(LENGTHS)

        masks = UnitMasks(layers)
        masks.set(heads, channels)
        with masks.applied():
            masked = _greedy(model, batch, mask)
        one_by_one = [_greedy(pruned, ids[i : i + 1, :n])[0] for i, n in enumerate(LENGTHS)]
        compressed = _greedy(pruned, batch, mask)
    assert masked == one_by_one  # the reference itself is padding-independent
    assert compressed == masked

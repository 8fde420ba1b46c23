"""Units, hooks, importance metrics, projection and one full PG step (policy.py has its own
tests in test_pruning_policy.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from hf_faithful.corpora import wikitext2
from hf_faithful.pruning import PolicyGradientPruner, PruningConfig
from hf_faithful.pruning.scores import (
    BudgetProjection,
    collect_activation_stats,
    hard_mask,
    transform_scores,
    unit_metrics,
)
from hf_faithful.pruning.units import UnitMasks, find_prunable_layers
from hf_faithful.testing.tiny_llama import tiny_causal_lm, trained_tiny_causal_lm

torch.set_num_threads(1)


def _ids(n=4, t=16, seed=0):
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


def _zeroed_copy(model, heads, channels):
    """Reference masked model: the masked units' o_proj / down_proj columns set to 0."""
    ref = copy.deepcopy(model)
    layers = find_prunable_layers(ref)
    for layer, hp, cp in zip(
        layers,
        heads.split([layer.num_kv_heads for layer in layers]),
        channels.split([layer.intermediate_size for layer in layers]),
    ):
        width = layer.group_size * layer.head_dim
        col = hp.repeat_interleave(width)
        with torch.no_grad():
            layer.attention.o_proj.weight.mul_(col)
            layer.mlp.down_proj.weight.mul_(cp)
    return ref


def test_units_found_from_structure():
    layers = find_prunable_layers(tiny_causal_lm("qwen3"))
    assert [
        (lay.num_heads, lay.num_kv_heads, lay.head_dim, lay.intermediate_size) for lay in layers
    ] == [(4, 2, 8, 48)] * 2
    with pytest.raises(ValueError, match="q_proj"):
        find_prunable_layers(torch.nn.Sequential(torch.nn.Linear(4, 4)))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_mask_hooks_equal_zeroed_weights_and_vanish(arch):
    model = tiny_causal_lm(arch)
    layers = find_prunable_layers(model)
    masks = UnitMasks(layers)
    heads = torch.tensor([1.0, 0.0, 0.0, 1.0])
    channels = (torch.rand(96, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    x = _ids()
    dense = model(x).logits
    masks.set(heads, channels)
    with torch.no_grad(), masks.applied():
        masked = model(x).logits
    expected = _zeroed_copy(model, heads, channels)(x).logits
    torch.testing.assert_close(masked, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(masked, dense)
    # hooks are gone after the block
    torch.testing.assert_close(model(x).logits, dense, rtol=0, atol=0)
    assert all(not lay.attention.o_proj._forward_pre_hooks for lay in layers)


def test_wanda_sp_matches_hand_computation_and_leaves_outputs_alone():
    model = tiny_causal_lm("llama")
    layers = find_prunable_layers(model)
    x = _ids(6, 16)
    captured = {}

    def grab(name):
        def hook(module, args, output):
            captured[name] = args[0].detach().reshape(-1, args[0].shape[-1]).double()

        return hook

    handles = [
        lay.attention.o_proj.register_forward_hook(grab(f"o{i}")) for i, lay in enumerate(layers)
    ] + [lay.mlp.down_proj.register_forward_hook(grab(f"d{i}")) for i, lay in enumerate(layers)]
    with torch.no_grad():
        dense = model(x).logits
    for h in handles:
        h.remove()

    stats = collect_activation_stats(model, layers, [x[:3], x[3:]], progress=False)
    heads, channels = unit_metrics("wanda_sp", layers, stats)
    exp_heads, exp_channels = [], []
    for i, lay in enumerate(layers):
        o_w = lay.attention.o_proj.weight.double()
        per_channel = o_w.abs().mean(0) * captured[f"o{i}"].norm(dim=0)
        # 2 KV groups x 2 query heads x head_dim 8: sum over head_dim, mean over query heads
        exp_heads.append(per_channel.view(2, 2, 8).sum(-1).mean(-1))
        d_w = lay.mlp.down_proj.weight.double()
        exp_channels.append(d_w.abs().mean(0) * captured[f"d{i}"].norm(dim=0))
    torch.testing.assert_close(heads, torch.cat(exp_heads))
    torch.testing.assert_close(channels, torch.cat(exp_channels))
    # the statistics hooks must not change what the model computes
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, dense, rtol=0, atol=0)

    flap_heads, flap_channels = unit_metrics("flap", layers, stats)
    d0 = captured["d0"]
    expected = d0.var(0) * layers[0].mlp.down_proj.weight.double().pow(2).sum(0)
    torch.testing.assert_close(flap_channels[:48], expected)


def test_sigmap_transform_hand_computed():
    metric = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    s = transform_scores(metric, [3, 3], keep=0.5)
    z = torch.tensor([-1.0, 0.0, 1.0])  # (m - mean) / std with unbiased std = 1
    sig = torch.sigmoid(z)
    torch.testing.assert_close(s[:3], (sig + 0.5 - sig.mean()).float())
    torch.testing.assert_close(s[3:], torch.full((3,), 0.5))  # constant layer: no information
    norm = transform_scores(metric, [3, 3], keep=0.5, transform="norm")
    torch.testing.assert_close(norm[:3], torch.tensor([0.0, 0.5, 1.0]))
    # init_scale sharpens: sigmoid(3z), still mean 0.5 in the layer
    sharp = transform_scores(metric, [3, 3], keep=0.5, scale=3.0)
    sig3 = torch.sigmoid(3 * z)
    torch.testing.assert_close(sharp[:3], (sig3 + 0.5 - sig3.mean()).float())
    assert float(sharp[2] - sharp[0]) > float(s[2] - s[0])


def test_init_scale_validated():
    with pytest.raises(ValueError, match="init_scale"):
        PruningConfig(init_scale=0.0)


def test_projection_hand_computed():
    proj = BudgetProjection([4], per_layer=False)
    s = torch.tensor([0.9, 0.8, 0.3, 0.2])
    proj(s, keep=0.5)  # sum must drop from 2.2 to 2.0: v = 0.05
    torch.testing.assert_close(s, torch.tensor([0.85, 0.75, 0.25, 0.15]), atol=1e-6, rtol=0)
    s = torch.tensor([1.5, 0.2, 0.1, -0.3])
    proj(s, keep=0.5)  # under budget: shifted up, tau = -1/3 (the sum must equal 2.0)
    torch.testing.assert_close(s, torch.tensor([1.0, 1.6 / 3, 1.3 / 3, 0.1 / 3]), atol=1e-6, rtol=0)
    # per layer, unequal layer sizes
    proj = BudgetProjection([2, 3], per_layer=True)
    s = torch.tensor([1.0, 1.0, 0.9, 0.9, 0.9])
    proj(s, keep=0.5)
    torch.testing.assert_close(s, torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5]), atol=1e-6, rtol=0)


def test_hard_mask_budgets_and_minimum():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.2, 0.05])
    g = hard_mask(scores, [3, 3], keep=0.5, per_layer=False, min_per_layer=1)
    assert g.tolist() == [1, 1, 0, 0, 1, 0]  # layer 2 keeps its best unit
    g0 = hard_mask(scores, [3, 3], keep=0.5, per_layer=False, min_per_layer=0)
    assert g0.tolist() == [1, 1, 1, 0, 0, 0]
    lay = hard_mask(scores, [3, 3], keep=0.34, per_layer=True)
    assert lay.tolist() == [1, 0, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="min"):
        hard_mask(scores, [3, 3], keep=0.2, per_layer=False, min_per_layer=1)


def test_one_step_matches_the_algorithm():
    """One fit step, recomputed from its definition with a zeroed-weights model."""
    model = tiny_causal_lm("llama")
    cfg = PruningConfig(
        sparsity=0.5,
        num_samples=3,
        max_steps=1,
        batch_size=2,
        seq_len=16,
        init="constant",
        learning_rate=0.1,
        lr_scheduler="constant",
        seed=3,
    )
    data = _ids(2, 16, seed=5)
    pruner = PolicyGradientPruner(model, config=cfg)
    pruner.initialize()
    s_h, s_c = pruner.scores_heads.clone(), pruner.scores_channels.clone()
    gen = torch.Generator().manual_seed(3)
    m_h = torch.empty(3, 4).bernoulli_(s_h.expand(3, -1), generator=gen)
    m_c = torch.empty(3, 96).bernoulli_(s_c.expand(3, -1), generator=gen)
    losses = []
    for k in range(3):
        ref = _zeroed_copy(model, m_h[k], m_c[k])
        with torch.no_grad():
            losses.append(ref(data, labels=data).loss.double())
    losses = torch.stack(losses)
    baseline = losses.mean()
    pruner.fit(data, progress=False)
    assert pruner.baseline == pytest.approx(float(baseline), rel=1e-5)

    def expected(s, m):
        g = ((losses - baseline)[:, None].float() * (m - s)).sum(0) / 2
        g = g / (s * (1 - s)).clamp_min(1e-6).sqrt()
        out = s - 0.1 * g
        BudgetProjection([out.numel()], per_layer=False)(out, 0.5)
        return out

    torch.testing.assert_close(pruner.scores_heads, expected(s_h, m_h), atol=1e-5, rtol=0)
    torch.testing.assert_close(pruner.scores_channels, expected(s_c, m_c), atol=1e-5, rtol=0)
    assert pruner.scores_heads.sum() <= 0.5 * 4 + 1e-5


def test_fit_improves_on_its_initialization():
    """On a (briefly) trained model, PG must find hard masks better than its init's."""
    text = wikitext2("valid")
    model, chunks = trained_tiny_causal_lm(text[:20000], steps=150)
    cfg = PruningConfig(
        sparsity=0.5,
        max_steps=300,
        batch_size=8,
        seq_len=32,
        init="random",
        learning_rate=0.2,
        seed=0,
        logging_steps=100,
    )
    pruner = PolicyGradientPruner(model, config=cfg)
    pruner.initialize(chunks, progress=False)

    def masked_loss():
        with torch.no_grad(), pruner.masked():
            return model(chunks[:64], labels=chunks[:64]).loss.item()

    before = masked_loss()
    history = pruner.fit(chunks, progress=False)
    assert [h["step"] for h in history] == [100, 200, 300]
    assert all(math.isfinite(h["loss"]) for h in history)
    assert masked_loss() < before - 0.05

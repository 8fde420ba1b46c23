"""The one-shot baselines against hand computations: FLAP (fluctuation metric, per-module
standardization, cost-aware threshold), Wanda-sp as published (per-layer, sequential
statistics), the method table and the paper preset."""

from __future__ import annotations

import copy

import pytest
import torch

from hf_faithful.pruning import PolicyGradientPruner, PruningConfig
from hf_faithful.pruning.config import METHODS, PRESETS, describe_method, deviations
from hf_faithful.pruning.scores import (
    collect_activation_stats,
    cost_aware_mask,
    standardized_metrics,
    unit_costs,
    unit_metrics,
)
from hf_faithful.pruning.units import find_prunable_layers
from hf_faithful.testing.tiny_llama import tiny_causal_lm

torch.set_num_threads(1)


def _ids(n=8, t=16, seed=0):
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


def _inputs(model, x):
    """Inputs of every o_proj / down_proj, [tokens, features] float64, from a dense pass."""
    layers = find_prunable_layers(model)
    captured = {}

    def grab(name):
        def hook(module, args):
            captured[name] = args[0].detach().reshape(-1, args[0].shape[-1]).double()

        return hook

    handles = [
        lay.attention.o_proj.register_forward_pre_hook(grab(f"o{i}"))
        for i, lay in enumerate(layers)
    ]
    handles += [
        lay.mlp.down_proj.register_forward_pre_hook(grab(f"d{i}")) for i, lay in enumerate(layers)
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return layers, captured


def test_unit_costs_count_the_parameters_a_unit_holds():
    model = tiny_causal_lm("qwen2")  # q/k/v biases count too
    layers = find_prunable_layers(model)
    heads, channels = unit_costs(layers)
    # hidden 32, head_dim 8, 2 query heads per KV group: q 16 rows, k and v 8 rows each,
    # (32 weights + 1 bias) per row, and 16 o_proj columns of 32
    assert heads.tolist() == [16 * 33 + 8 * 33 + 8 * 33 + 16 * 32] * 4
    assert channels.tolist() == [3 * 32] * 96  # gate row, up row, down column
    # removing every unit removes exactly the decoder's attention and MLP projections
    attn = sum(p.numel() for n, p in model.named_parameters() if "_proj" in n and "self_attn" in n)
    mlp = sum(p.numel() for n, p in model.named_parameters() if "mlp" in n)
    assert heads.sum() == attn and channels.sum() == mlp


def test_cost_aware_mask_keeps_the_prefix_nearest_the_budget():
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    costs = torch.tensor([10.0, 1.0, 1.0, 10.0, 1.0])  # total 23, keep 0.5 -> 11.5
    # prefixes by score: 10, 11, 12, 22, 23 -> 11 and 12 tie at 0.5: the first wins
    assert cost_aware_mask(scores, costs, 0.5).tolist() == [1, 1, 0, 0, 0]
    # 0.6 -> 13.8: 12 is nearest
    assert cost_aware_mask(scores, costs, 0.6).tolist() == [1, 1, 1, 0, 0]
    # a forced unit is kept and counted first: 10, then 20, 21, 22, 23 with the rest
    forced = torch.tensor([False, False, False, True, False])
    assert cost_aware_mask(scores, costs, 0.5, forced).tolist() == [0, 0, 0, 1, 0]  # 11.5
    assert cost_aware_mask(scores, costs, 0.9, forced).tolist() == [1, 1, 0, 1, 0]  # 20.7
    # keep nothing when even the cheapest prefix is further than none
    assert cost_aware_mask(scores, costs, 0.1).tolist() == [0, 0, 0, 0, 0]


def test_flap_metric_and_standardization_hand_computed():
    model = tiny_causal_lm("llama")
    x = _ids()
    layers, inputs = _inputs(model, x)
    stats = collect_activation_stats(model, layers, [x[:4], x[4:]], progress=False)
    heads, channels = unit_metrics("flap", layers, stats)
    z_heads, z_channels = standardized_metrics("flap", layers, stats)

    def z(v):
        return (v - v.mean()) / v.std()

    for i, lay in enumerate(layers):
        o_w = lay.attention.o_proj.weight.double()
        d_w = lay.mlp.down_proj.weight.double()
        # FLAP's WIFV: variance of each input over the tokens x squared column norm;
        # the released code squares the attention one
        o_metric = (inputs[f"o{i}"].var(0) * o_w.pow(2).sum(0)).pow(2)
        d_metric = inputs[f"d{i}"].var(0) * d_w.pow(2).sum(0)
        # 2 KV groups x 2 query heads x head_dim 8
        torch.testing.assert_close(
            heads[2 * i : 2 * i + 2], o_metric.view(2, 2, 8).sum(-1).mean(-1)
        )
        torch.testing.assert_close(channels[48 * i : 48 * i + 48], d_metric)
        # AL-AM: standardize over the module's channels, then a head is the mean of its own
        torch.testing.assert_close(z_heads[2 * i : 2 * i + 2], z(o_metric).view(2, 16).mean(1))
        torch.testing.assert_close(z_channels[48 * i : 48 * i + 48], z(d_metric))


def test_flap_one_shot_allocates_by_parameter_cost():
    model = tiny_causal_lm("llama")
    x = _ids(8, 32)
    cfg = PruningConfig.for_method(
        "flap", sparsity=0.5, batch_size=4, seq_len=32, init_num_samples=8
    )
    assert (cfg.init, cfg.allocation, cfg.compensate, cfg.max_steps) == ("flap", "cost", True, 0)
    pruner = PolicyGradientPruner(model, config=cfg)
    pruner.initialize(x, progress=False)
    heads, channels = pruner.hard_masks()
    layers = find_prunable_layers(model)
    stats = collect_activation_stats(model, layers, [x[:4], x[4:]], progress=False)
    z_heads, z_channels = standardized_metrics("flap", layers, stats)
    head_costs, channel_costs = unit_costs(layers)
    expected = cost_aware_mask(
        torch.cat([z_heads, z_channels]), torch.cat([head_costs, channel_costs]), 0.5
    )
    assert torch.equal(torch.cat([heads, channels]), expected)
    kept = float(heads.double() @ head_costs + channels.double() @ channel_costs)
    total = float(head_costs.sum() + channel_costs.sum())
    # within one head's cost of half of the prunable parameters
    assert abs(kept - total / 2) <= head_costs.max() / 2
    # the saved scores are the masks, and the compressed sizes follow them
    assert pruner.layer_sizes()["num_key_value_heads"] == [int(p.sum()) for p in heads.split(2)]
    # the per-layer (UL-UM) structure of FLAP keeps half of every layer
    uniform = PruningConfig.for_method("flap", budget="layer", seq_len=32, init_num_samples=8)
    assert uniform.allocation == "pool"


def test_wanda_sp_as_published_is_sequential_and_per_layer():
    """Layer 1's statistics come from the model with layer 0 already pruned."""
    model = tiny_causal_lm("llama")
    x = _ids(8, 32)
    cfg = PruningConfig.for_method(
        "wanda-sp", sparsity=0.5, batch_size=4, seq_len=32, init_num_samples=8
    )
    assert (cfg.budget, cfg.sequential_stats, cfg.compensate) == ("layer", True, False)
    pruner = PolicyGradientPruner(model, config=cfg)
    pruner.initialize(x, progress=False)
    heads, channels = pruner.hard_masks()

    # by hand: layer 0 from the dense model, then zero its pruned columns and measure layer 1
    reference = copy.deepcopy(model)
    expected_heads, expected_channels = [], []
    for i in range(2):
        layers, inputs = _inputs(reference, x)
        lay = layers[i]
        o_w, d_w = lay.attention.o_proj.weight.double(), lay.mlp.down_proj.weight.double()
        head_metric = (
            (o_w.abs().mean(0) * inputs[f"o{i}"].norm(dim=0)).view(2, 2, 8).sum(-1).mean(-1)
        )
        channel_metric = d_w.abs().mean(0) * inputs[f"d{i}"].norm(dim=0)
        h = torch.zeros(2)
        h[head_metric.argmax()] = 1
        c = torch.zeros(48)
        c[torch.topk(channel_metric, 24).indices] = 1
        expected_heads.append(h)
        expected_channels.append(c)
        with torch.no_grad():
            lay.attention.o_proj.weight.mul_(h.repeat_interleave(16))
            lay.mlp.down_proj.weight.mul_(c)
    assert torch.equal(heads, torch.cat(expected_heads))
    assert torch.equal(channels, torch.cat(expected_channels))
    # one-shot: the sequential masks are stored exactly (0/1 scores)
    assert set(pruner.scores_channels.unique().tolist()) == {0.0, 1.0}

    # the global variant (ours) measures everything on the dense model
    ours = PruningConfig.for_method("wanda-sp-global", sparsity=0.5, seq_len=32)
    assert (ours.budget, ours.sequential_stats) == ("global", False)


def test_methods_table_and_paper_preset():
    assert set(METHODS) == {"pg", "flap", "wanda-sp", "wanda-sp-global", "magnitude", "random"}
    for name in METHODS:
        cfg = PruningConfig.for_method(name)
        assert (cfg.max_steps > 0) == (name == "pg")
        assert describe_method(cfg)
    pg = PruningConfig.for_method("pg")  # the dev-split sweep chose both
    assert pg.compensate and pg.init_scale == 3.0
    assert any("sigmap init of 3" in d for d in deviations(pg))
    assert PruningConfig.for_method("magnitude", compensate=True).compensate
    paper = PruningConfig.for_method("pg", "paper")
    assert (paper.optimizer, paper.learning_rate, paper.weight_decay) == ("adam", 2e-3, 1e-4)
    assert (paper.max_steps, paper.batch_size, paper.num_samples) == (15_000, 8, 2)
    assert (paper.baseline_window, paper.budget, paper.init) == (5, "global", "wanda_sp")
    assert not paper.compensate and paper == PruningConfig(**PRESETS["paper"])
    assert paper.init_scale == 1.0 and not any("sigmap" in d for d in deviations(paper))
    assert PruningConfig.for_method("pg", "paper", learning_rate=6e-3).learning_rate == 6e-3
    assert any("Adam" in d for d in deviations(PruningConfig(max_steps=10)))
    assert not any("Adam" in d for d in deviations(paper))
    with pytest.raises(ValueError, match="method must be one of"):
        PruningConfig.for_method("sparsegpt")
    with pytest.raises(ValueError, match="use method 'pg'"):
        PruningConfig.for_method("flap", "paper")
    with pytest.raises(ValueError, match="wanda-sp-global"):
        PruningConfig.for_method("wanda-sp", budget="global")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"allocation": "cost"}, "one-shot allocation"),
        ({"allocation": "cost", "max_steps": 0, "budget": "layer"}, 'budget="global"'),
        ({"allocation": "cost", "max_steps": 0, "init": "constant"}, "ranks a metric"),
        ({"sequential_stats": True}, 'budget="layer"'),
        ({"sequential_stats": True, "budget": "layer", "init": "magnitude"}, "data metric"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
    ],
)
def test_bad_baseline_settings_name_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        PruningConfig(**values)

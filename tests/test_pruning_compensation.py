"""Bias compensation: a removed input of o_proj / down_proj replaced by its calibration
mean. The masked model with a mean-replacement hook, the compressed model with biases and
the reloaded folder must compute the same logits; PG samples the compensated network."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_faithful.pruning import PolicyGradientPruner, PrunedLlamaConfig, PruningConfig
from hf_faithful.pruning.scores import collect_activation_stats
from hf_faithful.pruning.units import find_prunable_layers
from hf_faithful.testing.tiny_llama import byte_tokenizer, tiny_causal_lm

torch.set_num_threads(1)


def _ids(n=8, t=32, seed=0):
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


class MeanReplacement:
    """Reference: pre-hooks that replace removed inputs by their means, x*m + mean*(1-m)."""

    def __init__(self, model, heads, channels, o_means, down_means):
        self.handles = []
        layers = find_prunable_layers(model)
        o_parts = o_means.split([lay.num_heads * lay.head_dim for lay in layers])
        d_parts = down_means.split([lay.intermediate_size for lay in layers])
        for lay, hp, cp, om, dm in zip(
            layers, heads.split(2), channels.split(48), o_parts, d_parts
        ):
            m = hp.repeat_interleave(lay.group_size * lay.head_dim)
            for proj, mask, mean in ((lay.attention.o_proj, m, om), (lay.mlp.down_proj, cp, dm)):
                self.handles.append(
                    proj.register_forward_pre_hook(
                        lambda mod, args, mask=mask, mean=mean: (
                            args[0] * mask + (mean.float() * (1 - mask)),
                        )
                    )
                )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("method", ["flap", "wanda-sp-global", "magnitude"])
def test_masked_compensated_equals_compressed_equals_reloaded(arch, method, tmp_path):
    model = tiny_causal_lm(arch)
    x = _ids()
    cfg = PruningConfig.for_method(
        method, sparsity=0.5, batch_size=4, seq_len=32, init_num_samples=8, compensate=True
    )
    pruner = PolicyGradientPruner(model, byte_tokenizer(), cfg)
    pruner.initialize(x, progress=False)
    heads, channels = pruner.hard_masks()
    layers = find_prunable_layers(model)
    stats = collect_activation_stats(model, layers, [x[:4], x[4:]], progress=False)
    o_means, down_means = stats.means()
    torch.testing.assert_close(pruner.input_means[0], o_means)

    with torch.no_grad():
        dense = model(x).logits
        with MeanReplacement(model, heads, channels, o_means, down_means):
            reference = model(x).logits
        with pruner.masked():
            masked = model(x).logits
    torch.testing.assert_close(masked, reference, rtol=0, atol=1e-5)
    assert not torch.allclose(reference, dense, atol=1e-3)

    pruned = pruner.save_pretrained(tmp_path / "pruned")
    assert pruned.config.o_proj_bias and pruned.config.down_proj_bias
    with torch.no_grad():
        torch.testing.assert_close(pruned(x).logits, reference, rtol=0, atol=1e-5)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    assert isinstance(reloaded.config, PrunedLlamaConfig)
    assert reloaded.model.layers[0].mlp.down_proj.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, reference, rtol=0, atol=1e-5)
    # the base architecture (llama) has no output biases; the config records them
    assert reloaded.config.text_config.to_dict().get("mlp_bias") in (None, False)
    # without compensation the same masks give the plain masked model, and no biases
    plain = PolicyGradientPruner(
        model,
        config=PruningConfig.for_method(method, compensate=False, seq_len=32, init_num_samples=8),
    )
    plain.initialize(x, progress=False)
    assert plain.compress().model.layers[0].mlp.down_proj.bias is None


def test_a_layer_without_heads_keeps_its_compensation_bias(tmp_path):
    """An EmptyAttention layer adds o_proj's bias: the mean output of the removed heads."""
    model = tiny_causal_lm("llama")
    x = _ids()
    cfg = PruningConfig(sparsity=0.5, max_steps=0, init="constant", compensate=True, seq_len=32)
    pruner = PolicyGradientPruner(model, config=cfg)
    pruner.initialize(x, progress=False)
    pruner.scores_heads.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0]))  # layer 0 loses both groups
    heads, channels = pruner.hard_masks()
    assert heads.tolist() == [0, 0, 1, 1]
    with torch.no_grad(), pruner.masked():
        masked = model(x).logits
    pruner.save_pretrained(tmp_path / "p")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    empty = reloaded.model.layers[0].self_attn
    assert type(empty).__name__ == "EmptyAttention" and empty.o_proj.bias.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, masked, rtol=0, atol=1e-5)
        out = reloaded.generate(x[:1, :8], max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 11)


def test_pg_samples_the_compensated_network():
    """One PG step's losses are those of the mean-replaced network of each sampled mask."""
    model = tiny_causal_lm("llama")
    x = _ids(2, 16, seed=5)
    cfg = PruningConfig(
        sparsity=0.5,
        num_samples=3,
        max_steps=1,
        batch_size=2,
        seq_len=16,
        init="constant",
        learning_rate=0.1,
        lr_scheduler="constant",
        compensate=True,
        init_num_samples=2,
        seed=3,
    )
    pruner = PolicyGradientPruner(model, config=cfg)
    pruner.initialize(x, progress=False)
    s_h, s_c = pruner.scores_heads.clone(), pruner.scores_channels.clone()
    o_means, down_means = pruner.input_means
    gen = torch.Generator().manual_seed(3)
    m_h = torch.empty(3, 4).bernoulli_(s_h.expand(3, -1), generator=gen)
    m_c = torch.empty(3, 96).bernoulli_(s_c.expand(3, -1), generator=gen)
    losses = []
    for k in range(3):
        with torch.no_grad(), MeanReplacement(model, m_h[k], m_c[k], o_means, down_means):
            losses.append(model(x, labels=x).loss.double())
    pruner.fit(x, progress=False)
    assert pruner.baseline == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)


def test_compensated_pg_resumes_with_adam(tmp_path, monkeypatch):
    """Means and Adam's moments travel in the checkpoint: a resumed run equals a straight one."""
    model = tiny_causal_lm("llama")
    x = _ids(16, 32)
    config = PruningConfig(
        sparsity=0.5,
        max_steps=6,
        batch_size=4,
        seq_len=32,
        init_num_samples=8,
        optimizer="adam",
        learning_rate=0.01,
        weight_decay=1e-4,
        compensate=True,
        save_steps=3,
        output_dir=str(tmp_path),
    )
    straight = PolicyGradientPruner(model, config=config)
    straight.fit(x, progress=False)

    original = PolicyGradientPruner._sample_losses
    calls = {"n": 0}

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PolicyGradientPruner, "_sample_losses", dying)
    with pytest.raises(KeyboardInterrupt):
        PolicyGradientPruner(model, config=config).fit(x, progress=False)
    monkeypatch.setattr(PolicyGradientPruner, "_sample_losses", original)
    resumed = PolicyGradientPruner(model, config=config)
    resumed.fit(x, resume_from_checkpoint=True, progress=False)
    assert resumed.input_means is not None and resumed._optimizer_state is not None
    torch.testing.assert_close(resumed.scores_heads, straight.scores_heads)
    torch.testing.assert_close(resumed.scores_channels, straight.scores_channels)
    assert resumed.baseline == pytest.approx(straight.baseline)
    torch.testing.assert_close(resumed.input_means[1], straight.input_means[1])

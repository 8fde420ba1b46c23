"""Compression beyond Llama/Qwen (issue 14, 5b-c): Gemma and Gemma 2 compress exactly,
and architectures that cannot (OLMo-2's full-width q_norm / k_norm) are refused before
any optimization, by the pruner and by the CLI."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hf_faithful.cli import main
from hf_faithful.pruning import PolicyGradientPruner, PruningConfig
from hf_faithful.pruning.compress import check_compressible, compress_model
from hf_faithful.pruning.units import UnitMasks, find_prunable_layers

torch.set_num_threads(1)
SIZES = {
    "vocab_size": 260,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 256,
    "pad_token_id": 258,
}
X = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))


def _config(model_type: str, **overrides):
    return AutoConfig.for_model(model_type, **{**SIZES, **overrides})


def _model(model_type: str, **overrides):
    """A tiny random model with O(1)-scale weights: logits of several units, so a
    dropped softcap (Gemma 2 caps at 30) shows as a clear difference."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(model_type, **overrides)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 3.0 / param.shape[-1] ** 0.5)
            else:
                param.add_(torch.randn_like(param), alpha=0.1)
    return model


@pytest.mark.parametrize("model_type", ["gemma", "gemma2"])
@pytest.mark.parametrize("heads", [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
def test_gemma_masked_equals_compressed(model_type, heads):
    model = _model(model_type)
    layers = find_prunable_layers(model)
    heads = torch.tensor(heads)
    channels = (torch.rand(96, generator=torch.Generator().manual_seed(1)) > 0.4).float()
    masks = UnitMasks(layers)
    masks.set(heads, channels)
    with torch.no_grad():
        with masks.applied():
            masked = model(X).logits
        pruned = compress_model(model, layers, heads, channels)
        compressed = pruned(X).logits
    assert masked.abs().max() > 5  # the test can see a missing softcap
    torch.testing.assert_close(compressed, masked, rtol=1e-5, atol=1e-4)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert pruned.config.text_config.model_type == model_type


SUPPORTED = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"]


@pytest.mark.parametrize("model_type", SUPPORTED)
def test_supported_types_pass_the_check(model_type):
    check_compressible(_config(model_type))


def test_olmo2_is_refused_by_name():
    with pytest.raises(ValueError, match=r"model_type 'olmo2'.*q_norm.*full width"):
        check_compressible(_config("olmo2"))


def test_a_logit_scale_outside_the_decoder_is_refused():
    # Cohere multiplies the logits in its head: compression would silently change them
    with pytest.raises(ValueError, match=r"model_type 'cohere'.*logits differ"):
        check_compressible(_config("cohere", logit_scale=0.5))


def test_the_check_leaves_the_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_compressible(_config("llama", rope_theta=12345.0))  # not cached yet
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_pruner_refuses_olmo2_up_front():
    model = AutoModelForCausalLM.from_config(_config("olmo2")).eval()
    with pytest.raises(ValueError, match=r"olmo2.*q_norm"):
        PolicyGradientPruner(model, config=PruningConfig(max_steps=1))


def test_pruner_accepts_gemma2():
    pruner = PolicyGradientPruner(_model("gemma2"), config=PruningConfig(max_steps=1))
    assert pruner.head_sizes == [2, 2]


def test_cli_refuses_olmo2_before_loading_weights(tmp_path, capsys):
    folder = tmp_path / "olmo2"
    _config("olmo2").save_pretrained(folder)  # a config alone: no weights to load
    calibration = tmp_path / "calib.txt"
    calibration.write_text("text " * 200)
    args = ["prune", str(folder), "--calibration", str(calibration), "--output"]
    assert main([*args, str(tmp_path / "out"), "--no-final-eval"]) == 2
    err = capsys.readouterr().err
    assert "hf-faithful prune: error: cannot prune model_type 'olmo2'" in err
    assert not (tmp_path / "out").exists()

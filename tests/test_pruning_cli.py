"""`hf-faithful prune` end to end on a tiny model folder, its resume and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_faithful.cli import main
from hf_faithful.pruning import PolicyGradientPruner, PruningConfig
from hf_faithful.testing.tiny_llama import byte_tokenizer, tiny_causal_lm

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    tiny_causal_lm("llama").save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "calib.txt"
    path.write_text("A tiny calibration text for pruning. " * 30)
    return path


def _args(model_dir, calibration, output, *extra):
    return [
        "prune",
        str(model_dir),
        "--calibration",
        str(calibration),
        "--output",
        str(output),
        "--sparsity",
        "0.5",
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--init-num-samples",
        "4",
        "--eval-steps",
        "2",
        "--eval-chunks",
        "2",
        "--save-steps",
        "2",
        "--final-eval-chunks",
        "3",
        *extra,
    ]


def test_prune_command_saves_a_smaller_model(model_dir, calibration, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(_args(model_dir, calibration, out)) == 0
    printed = capsys.readouterr()
    assert "perplexity" in printed.out and "parameters:" in printed.out
    assert "step 2: perplexity" in printed.out + printed.err  # periodic evaluation
    assert not (out / "checkpoint.safetensors").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["pruning"]["steps"] == 4
    model = AutoModelForCausalLM.from_pretrained(out)
    dense = AutoModelForCausalLM.from_pretrained(model_dir)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in dense.parameters())
    card = (out / "README.md").read_text()
    assert "WikiText-2 test perplexity" in card


def test_prune_command_resumes(model_dir, calibration, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    original = PolicyGradientPruner._sample_losses
    calls = {"n": 0}

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PolicyGradientPruner, "_sample_losses", dying)
    with pytest.raises(KeyboardInterrupt):
        main(_args(model_dir, calibration, out, "--no-final-eval"))
    monkeypatch.setattr(PolicyGradientPruner, "_sample_losses", original)
    assert (out / "checkpoint.safetensors").is_file()
    assert main(_args(model_dir, calibration, out, "--no-final-eval", "--resume")) == 0
    assert json.loads((out / "config.json").read_text())["pruning"]["steps"] == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sparsity", "1.0"], "sparsity must be in [0, 1)"),
        (["--sparsity", "-0.1"], "sparsity must be in [0, 1)"),
        (["--num-samples", "1"], "num_samples"),
        (["--resume"], "no checkpoint"),
        (["--seq-len", "100000"], "fewer than one sequence"),
        (["--min-heads-per-layer", "2"], "min_heads_per_layer"),
    ],
)
def test_prune_command_reports_bad_input(model_dir, calibration, tmp_path, capsys, extra, message):
    assert main(_args(model_dir, calibration, tmp_path / "bad", "--no-final-eval", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hf-faithful prune: error:") and message in err


def test_missing_inputs_are_reported(model_dir, calibration, tmp_path, capsys):
    assert main(_args(model_dir, tmp_path / "nope.txt", tmp_path / "o")) == 2
    assert "--calibration file not found" in capsys.readouterr().err
    assert main(_args(tmp_path / "no_model", calibration, tmp_path / "o")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_input_in_the_api():
    model = tiny_causal_lm()
    with pytest.raises(ValueError, match="sparsity"):
        PruningConfig(sparsity=1.0)
    with pytest.raises(ValueError, match="no decoder layer"):
        PolicyGradientPruner(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="fewer than one sequence"):
        PolicyGradientPruner(model, byte_tokenizer(), PruningConfig(seq_len=64)).fit("too short")
    with pytest.raises(ValueError, match="min_heads_per_layer=1"):
        PolicyGradientPruner(model, config=PruningConfig(sparsity=0.9, min_heads_per_layer=1))
    with pytest.raises(ValueError, match="calibration data must be"):
        PolicyGradientPruner(model, config=PruningConfig()).fit(42)


def test_all_nan_losses_raise_a_clear_error():
    model = tiny_causal_lm()
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    pruner = PolicyGradientPruner(
        model, config=PruningConfig(init="constant", max_steps=50, batch_size=2, seq_len=16)
    )
    with pytest.raises(ValueError, match="NaN"):
        pruner.fit(torch.randint(0, 256, (4, 16)), progress=False)
    assert pruner.skipped_steps == 20
    assert torch.all(pruner.scores_heads == 0.5)  # skipped steps leave the scores alone


def test_one_shot_methods_from_the_cli(model_dir, calibration, tmp_path, capsys):
    """--method flap is FLAP: cost-aware masks and bias compensation in the saved model."""

    def one_shot(out, *extra):
        args = _args(model_dir, calibration, out, *extra)
        i = args.index("--steps")
        return args[:i] + args[i + 2 :]

    out = tmp_path / "flap"
    assert main(one_shot(out, "--method", "flap")) == 0
    printed = capsys.readouterr().out
    assert "one-shot FLAP" in printed and "first 3 of" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["o_proj_bias"] and config["down_proj_bias"]
    assert config["pruning"]["steps"] == 0 and "FLAP" in config["pruning"]["method"]
    assert config["pruning"]["bias_compensation"] is True
    assert config["pruning"]["calibration"] == str(calibration)
    assert "first 3 of" in config["pruning"]["evaluation"]
    assert "deviations from the papers" in (out / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.model.layers[0].mlp.down_proj.bias is not None
    # an explicit option beats the method's setting
    out = tmp_path / "wanda"
    assert main(one_shot(out, "--method", "wanda-sp", "--compensate")) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["down_proj_bias"] and "sequential" in config["pruning"]["method"]
    assert config["pruning"]["budget"] == "layer"
    assert main(_args(model_dir, calibration, out, "--method", "magnitude")) == 2
    assert "is one-shot" in capsys.readouterr().err


def test_preset_and_method_values_yield_to_explicit_options():
    from hf_faithful.cli import build_parser
    from hf_faithful.pruning.cli import _config

    parse = build_parser().parse_args
    cfg = _config(parse(["prune", "--output", "o", "--preset", "paper"]))
    assert (cfg.optimizer, cfg.learning_rate, cfg.max_steps, cfg.compensate) == (
        "adam",
        2e-3,
        15_000,
        False,
    )
    # explicit options win, even when they equal a default
    cfg = _config(
        parse(["prune", "--output", "o", "--preset", "paper", "--lr", "6e-3", "--steps", "300"])
    )
    assert (cfg.learning_rate, cfg.max_steps, cfg.weight_decay) == (6e-3, 300, 1e-4)
    cfg = _config(parse(["prune", "--output", "o", "--method", "flap", "--no-compensate"]))
    assert (cfg.allocation, cfg.compensate, cfg.max_steps) == ("cost", False, 0)
    cfg = _config(parse(["prune", "--output", "o", "--method", "flap", "--budget", "layer"]))
    assert cfg.allocation == "pool"  # FLAP's per-layer (UL-UM) structure
    assert _config(parse(["prune", "--output", "o"])).compensate  # pg: compensated


def test_device_and_dtype_default_to_the_gpu_in_bf16():
    import torch

    from hf_faithful.pruning.cli import resolve_device_dtype

    assert resolve_device_dtype(None, "auto", cuda=True) == ("cuda", torch.bfloat16)
    assert resolve_device_dtype(None, "auto", cuda=False) == ("cpu", torch.float32)
    assert resolve_device_dtype("cpu", "auto", cuda=True) == ("cpu", torch.float32)
    assert resolve_device_dtype("cuda:1", "float32", cuda=True) == ("cuda:1", torch.float32)


@pytest.mark.parametrize(
    "repo, env, message",
    [
        ("not a repo", {}, "repo id must look like"),
        ("me/pruned", {"HF_HUB_OFFLINE": "1"}, "offline mode"),
        ("me/pruned", {"HF_HUB_OFFLINE": "0"}, "no Hugging Face token"),
    ],
)
def test_push_to_hub_is_checked_before_pruning(
    model_dir, calibration, tmp_path, capsys, monkeypatch, repo, env, message
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored token
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    fitted = []
    monkeypatch.setattr(PolicyGradientPruner, "fit", lambda *a, **k: fitted.append(1))
    out = tmp_path / "pushed"
    assert main(_args(model_dir, calibration, out, "--push-to-hub", repo)) == 2
    assert message in capsys.readouterr().err
    assert not fitted and not out.exists()  # refused before loading or pruning anything

"""Recovery fine-tuning (LoRA merged into a pruned model): it lowers held-out loss, the
merged folder has the input's format and reloads (also without hf_faithful) with the
merged logits, a killed run resumes to the same weights, gradient accumulation and two
processes (torchrun + gloo, what ``accelerate launch`` starts) match one large batch,
bad arguments are named, and the recovery benchmark runs with tiny settings."""

from __future__ import annotations

import dataclasses
import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_faithful.cli import main
from hf_faithful.corpora import calibration_text, wikitext2_test, wikitext2_valid_train_part
from hf_faithful.pruning import PolicyGradientPruner, PruningConfig
from hf_faithful.pruning import recover as recover_module
from hf_faithful.pruning.recover import (
    ADAPTER_DIR,
    CHECKPOINT_FILE,
    LOG_FILE,
    SECTION_HEADING,
    RecoveryConfig,
    load_recovery_text,
    recover,
)
from hf_faithful.pruning.state import STATE_FILE
from hf_faithful.testing.tiny_llama import byte_tokenizer, trained_tiny_causal_lm

torch.set_num_threads(1)
X = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
# quick settings for a 2-layer byte-level model; the data are the bundled defaults
QUICK = dict(rank=4, learning_rate=1e-2, batch_size=8, seq_len=32, warmup_steps=2, eval_chunks=40)


@pytest.fixture(scope="module")
def pruned_folder(tmp_path_factory) -> Path:
    """A tiny Llama fitted on the first part of WikiText-2 valid, 50% pruned (Wanda-sp)."""
    model, _ = trained_tiny_causal_lm(wikitext2_valid_train_part()[:40_000], steps=150)
    config = PruningConfig(sparsity=0.5, max_steps=0, seq_len=32, init_num_samples=16)
    pruner = PolicyGradientPruner(model, byte_tokenizer(), config)
    pruner.fit(calibration_text()[:20_000], progress=False)
    folder = tmp_path_factory.mktemp("pruned")
    pruner.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def recovered(pruned_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("recovered")
    config = RecoveryConfig(max_steps=30, output_dir=str(out), save_steps=10, **QUICK)
    return recover(pruned_folder, config, progress=False)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X).logits


def test_recovery_lowers_held_out_perplexity_and_training_loss(recovered):
    ppl = recovered.perplexity
    assert ppl["after"] < 0.9 * ppl["before"], ppl
    losses = recovered.summary["train_loss"]
    assert losses["last"] < losses["first"]
    assert [h["step"] for h in recovered.history] == list(range(1, 31))
    summary = recovered.summary
    assert summary["shared_lines"] == 0  # bundled recovery text vs WikiText-2 test
    assert summary["eval_data"] == "WikiText-2 test" and "WikiText-2 valid" in summary["data"]


def test_merged_folder_has_the_format_of_the_pruned_folder(recovered, pruned_folder):
    out = recovered.output_dir
    before, after = set(os.listdir(pruned_folder)), set(os.listdir(out))
    assert before <= after and {LOG_FILE, ADAPTER_DIR} <= after
    assert CHECKPOINT_FILE not in after and not list(out.glob("*.tmp"))
    old = json.loads((pruned_folder / "config.json").read_text())
    new = json.loads((out / "config.json").read_text())
    for key in (
        "auto_map",
        "model_type",
        "architectures",
        "num_attention_heads_per_layer",
        "num_key_value_heads_per_layer",
        "intermediate_size_per_layer",
    ):
        assert new[key] == old[key], key
    new["text_config"].pop("dtype", None), old["text_config"].pop("dtype", None)  # load dtype
    assert new["text_config"] == old["text_config"]
    recovery = new["pruning"].pop("recovery")
    assert new["pruning"] == old["pruning"]
    assert recovery["rank"] == 4 and recovery["steps"] == 30
    for name in ("modeling_pruned.py", STATE_FILE):
        assert (out / name).read_bytes() == (pruned_folder / name).read_bytes(), name
    log = json.loads((out / LOG_FILE).read_text())
    assert len(log["history"]) == 30 and log["summary"]["rank"] == 4


def test_card_records_the_recovery(recovered):
    card = (recovered.output_dir / "README.md").read_text()
    ppl = recovered.perplexity
    section = card[card.index(SECTION_HEADING) :]
    assert card.index("## How it was made") < card.index(SECTION_HEADING) < card.index("## Usage")
    for text in (
        "WikiText-2 test",
        "disjoint: 0 shared lines",
        "last 30% of WikiText-2 valid",
        "30 x 256 tokens",
        "rank 4, alpha 16",
        f"{ppl['before']:.3f} before recovery -> {ppl['after']:.3f} after",
    ):
        assert text in section, text
    assert f"value: {round(ppl['after'], 4)}" in card and "lora-recovery" in card


def test_merged_folder_reloads_with_the_merged_logits(recovered, pruned_folder):
    from peft import PeftModel

    merged = _logits(recovered.model)
    reloaded = AutoModelForCausalLM.from_pretrained(recovered.output_dir)
    torch.testing.assert_close(_logits(reloaded), merged, rtol=0, atol=0)
    # the merge equals the pruned model with the (unmerged) adapter on top
    base = AutoModelForCausalLM.from_pretrained(pruned_folder)
    adapted = PeftModel.from_pretrained(base, recovered.output_dir / ADAPTER_DIR)
    torch.testing.assert_close(_logits(adapted), merged, rtol=1e-5, atol=1e-5)
    pruned = _logits(AutoModelForCausalLM.from_pretrained(pruned_folder))
    assert (pruned - merged).abs().max() > 1e-2  # recovery changed the weights


RELOAD = textwrap.dedent(
    """
    import json, sys
    sys.path.append(sys.argv[1])  # site-packages without .pth files: no editable hf_faithful
    try:
        import hf_faithful
        raise SystemExit("hf_faithful is importable")
    except ImportError:
        pass
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(sys.argv[2], trust_remote_code=True)
    with torch.no_grad():
        logits = model(torch.tensor(json.loads(sys.stdin.readline()))).logits
    print(json.dumps({"module": type(model).__module__, "logits": logits.tolist()}))
    """
)


def test_merged_folder_reloads_without_hf_faithful(recovered, tmp_path):
    site_packages = next(p for p in site.getsitepackages() if p.endswith("site-packages"))
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", RELOAD, site_packages, str(recovered.output_dir)],
        input=json.dumps(X.tolist()) + "\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["module"].startswith("transformers_modules.")
    merged = _logits(recovered.model)
    torch.testing.assert_close(torch.tensor(got["logits"]), merged, rtol=1e-6, atol=1e-6)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a, b, atol=1e-6):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=atol, msg=key)


def test_killed_run_resumes_from_its_checkpoint(pruned_folder, tmp_path, monkeypatch):
    settings = dict(QUICK, max_steps=6, evaluate=False)  # dropout 0.05: RNG replayed too
    # an in-memory model is recovered in place
    model = AutoModelForCausalLM.from_pretrained(pruned_folder)
    full = recover(model, RecoveryConfig(**settings), tokenizer=byte_tokenizer(), progress=False)
    assert full.model is model

    out = tmp_path / "out"
    config = RecoveryConfig(**settings, save_steps=2, output_dir=str(out))
    original = recover_module._forward_loss
    calls = {"n": 0}

    def counting(*args, die_at=None):
        calls["n"] += 1
        if calls["n"] == die_at:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(recover_module, "_forward_loss", lambda *a: counting(*a, die_at=5))
    with pytest.raises(KeyboardInterrupt):  # killed during step 5, after the step-4 checkpoint
        recover(pruned_folder, config, progress=False)
    saved = torch.load(out / CHECKPOINT_FILE, weights_only=True)
    assert saved["step"] == 4 and not list(out.glob("*.tmp"))

    with pytest.raises(ValueError, match="learning_rate: 0.01 -> 0.02"):
        recover(pruned_folder, dataclasses.replace(config, learning_rate=0.02), progress=False)

    with pytest.raises(ValueError, match="data_sha256"):  # other recovery text
        recover(pruned_folder, config, train_data=calibration_text()[:50_000], progress=False)

    calls["n"] = 0
    monkeypatch.setattr(recover_module, "_forward_loss", lambda *a: counting(*a))
    resumed = recover(pruned_folder, config, progress=False)
    assert calls["n"] == 2  # steps 5 and 6 only
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in full.history], abs=1e-6
    )
    _assert_same_weights(resumed.model, full.model)
    assert not (out / CHECKPOINT_FILE).exists()


def test_gradient_accumulation_matches_one_large_batch(pruned_folder):
    settings = dict(QUICK, max_steps=3, evaluate=False, dropout=0.0)
    big = recover(pruned_folder, RecoveryConfig(**settings), progress=False)
    settings.update(batch_size=4, gradient_accumulation_steps=2)
    accumulated = recover(pruned_folder, RecoveryConfig(**settings), progress=False)
    assert [h["loss"] for h in accumulated.history] == pytest.approx(
        [h["loss"] for h in big.history], abs=1e-5
    )
    _assert_same_weights(accumulated.model, big.model, atol=1e-5)


WORKER = textwrap.dedent(
    """
    import sys
    import torch
    from accelerate import PartialState
    from hf_faithful.pruning.recover import RecoveryConfig, recover

    torch.set_num_threads(1)
    folder, out = sys.argv[1], sys.argv[2]
    config = RecoveryConfig(rank=4, learning_rate=1e-2, batch_size=4, seq_len=32, max_steps=3,
                            warmup_steps=2, evaluate=False, dropout=0.0, device="cpu")
    result = recover(folder, config, progress=False)
    state = PartialState()
    assert state.num_processes == 2, state.num_processes
    torch.save({"weights": result.model.state_dict(), "history": result.history},
               f"{out}.{state.process_index}.pt")
    """
)


def test_two_processes_match_one(pruned_folder, tmp_path):
    settings = dict(QUICK, batch_size=8, max_steps=3, evaluate=False, dropout=0.0)
    single = recover(pruned_folder, RecoveryConfig(**settings), progress=False)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    # torchrun with gloo is what accelerate runs per process; `accelerate launch --cpu`
    # itself starts several CPU processes only through mpirun
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(pruned_folder),
            str(tmp_path / "w"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        got = torch.load(tmp_path / f"w.{rank}.pt", weights_only=True)
        assert [h["loss"] for h in got["history"]] == pytest.approx(
            [h["loss"] for h in single.history], abs=1e-5
        )
        for key, value in single.model.state_dict().items():
            torch.testing.assert_close(got["weights"][key], value, rtol=0, atol=1e-5)


def test_cli_recovers_resumably_and_names_bad_options(pruned_folder, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["recover", str(pruned_folder), "--output", str(out), "--quiet"]
    args += ["--steps", "2", "--lr", "0.01", "--batch-size", "4", "--seq-len", "32"]
    assert main([*args, "--eval-chunks", "4", "--rank", "2", "--no-save-adapter"]) == 0
    printed = capsys.readouterr().out
    assert "held-out perplexity (WikiText-2 test)" in printed and f"saved to {out}" in printed
    assert (out / "config.json").is_file() and not (out / ADAPTER_DIR).exists()
    assert json.loads((out / LOG_FILE).read_text())["summary"]["rank"] == 2

    for bad, named in (
        (["--rank", "0"], "RecoveryConfig.rank"),
        (["--lr", "-1"], "RecoveryConfig.learning_rate"),
        (["--target-modules", "nope_proj"], "RecoveryConfig.target_modules"),
        (["--data", "missing.txt"], "RecoveryConfig.data"),
    ):
        assert main([*args, *bad]) == 2
        assert named in capsys.readouterr().err, bad
    assert main(["recover", str(tmp_path / "nowhere"), "--output", str(out)]) == 2
    assert "PRUNED_FOLDER" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rank", 0),
        ("alpha", 0),
        ("dropout", 1.0),
        ("max_steps", 0),
        ("learning_rate", -1e-3),
        ("batch_size", 0),
        ("gradient_accumulation_steps", 0),
        ("seq_len", 1),
        ("warmup_steps", -1),
        ("save_steps", -1),
        ("max_grad_norm", -1),
        ("eval_chunks", 0),
        ("lr_scheduler", "exponential"),
        ("device", "tpu"),
        ("dtype", "int8"),
        ("target_modules", []),
    ],
)
def test_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=f"RecoveryConfig.{field} "):
        RecoveryConfig(**{field: value})


def test_recover_names_bad_arguments(pruned_folder, tmp_path):
    quick = dict(QUICK, max_steps=1, evaluate=False)
    with pytest.raises(FileNotFoundError, match="model_or_folder"):
        recover(tmp_path / "missing", RecoveryConfig(**quick))
    with pytest.raises(ValueError, match="model_or_folder"):
        recover(object(), RecoveryConfig(**quick))
    with pytest.raises(ValueError, match="config must be a RecoveryConfig"):
        recover(pruned_folder, {"rank": 4})
    with pytest.raises(ValueError, match="output_dir must differ"):
        recover(pruned_folder, RecoveryConfig(**quick, output_dir=str(pruned_folder)))
    with pytest.raises(ValueError, match="RecoveryConfig.batch_size"):
        recover(pruned_folder, RecoveryConfig(**{**quick, "batch_size": 100}), train_data="x" * 99)
    with pytest.raises(ValueError, match="target_modules: no linear layer named \\['wq'\\]"):
        recover(pruned_folder, RecoveryConfig(**quick, target_modules=["q_proj", "wq"]))
    with pytest.raises(FileNotFoundError, match="RecoveryConfig.eval_data"):
        recover(pruned_folder, RecoveryConfig(**{**quick, "evaluate": True}, eval_data="no.txt"))
    # recovery text must not contain the held-out text
    leaky = tmp_path / "leaky.txt"
    leaky.write_text(calibration_text()[:5000] + wikitext2_test()[:5000])
    with pytest.raises(ValueError, match="share .* lines with the held-out text"):
        recover(pruned_folder, RecoveryConfig(**{**quick, "evaluate": True}, data=str(leaky)))
    model = AutoModelForCausalLM.from_pretrained(pruned_folder)
    with pytest.raises(ValueError, match="tokenizer is required"):
        recover(model, RecoveryConfig(**quick))


def test_recovery_data_sources(tmp_path):
    from datasets import Dataset, DatasetDict

    text, desc = load_recovery_text(RecoveryConfig())
    assert text == calibration_text() and "last 30% of WikiText-2 valid" in desc
    path = tmp_path / "mine.txt"
    path.write_text("some recovery text\n")
    assert load_recovery_text(RecoveryConfig(data=str(path))) == (
        "some recovery text\n",
        "text file mine.txt",
    )
    rows = {"text": ["a line", "", "another line"], "other": [1, 2, 3]}
    DatasetDict({"train": Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds"))
    texts, desc = load_recovery_text(RecoveryConfig(data=str(tmp_path / "ds")))
    assert texts == ["a line", "another line"] and desc == "dataset folder ds"
    with pytest.raises(ValueError, match="RecoveryConfig.data_split 'validation'"):
        load_recovery_text(RecoveryConfig(data=str(tmp_path / "ds"), data_split="validation"))
    with pytest.raises(ValueError, match="RecoveryConfig.text_column 'body'"):
        load_recovery_text(RecoveryConfig(data=str(tmp_path / "ds"), text_column="body"))
    with pytest.raises(FileNotFoundError, match="RecoveryConfig.data"):
        load_recovery_text(RecoveryConfig(data="./nowhere/corpus"))


def test_recovery_benchmark_runs_quick(tmp_path):
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    import bench_recovery

    out = tmp_path / "recovery.json"
    data = bench_recovery.main(["--quick", "--no-write", "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    for row in data["results"]:
        assert row["ppl_before"] > 0 and row["ppl_after"] > 0 and row["train_s"] > 0
        assert row["peak_memory_mb"] > 0 and "hff_cloze" in row["tasks_after"]
        assert row["prune_wall_s"] > 0 and "bias compensation" in row["prune_method"]

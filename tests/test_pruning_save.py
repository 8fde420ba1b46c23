"""Compressed models: masked vs compressed logits, save/reload (also without
hf_faithful installed), Hub upload, prune state and resuming a killed run."""

from __future__ import annotations

import copy
import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_faithful.pruning import PolicyGradientPruner, PrunedLlamaForCausalLM, PruningConfig
from hf_faithful.pruning.card import retarget_card
from hf_faithful.pruning.compress import compress_model
from hf_faithful.pruning.export import base_license, hub_id, portable_name
from hf_faithful.pruning.state import CHECKPOINT_FILE, load_prune_state
from hf_faithful.pruning.units import UnitMasks, find_prunable_layers
from hf_faithful.testing.tiny_llama import ARCHITECTURES, byte_tokenizer, tiny_causal_lm

torch.set_num_threads(1)
X = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))


def _masks(seed=0):
    gen = torch.Generator().manual_seed(seed)
    heads = torch.tensor([1.0, 1.0, 0.0, 0.0])  # layer 1 loses every head
    channels = (torch.rand(96, generator=gen) > 0.6).float()
    return heads, channels


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("heads", [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
def test_masked_equals_compressed(arch, heads):
    model = tiny_causal_lm(arch, **({"attention_bias": True} if arch == "llama" else {}))
    layers = find_prunable_layers(model)
    heads = torch.tensor(heads)
    channels = _masks()[1]
    masks = UnitMasks(layers)
    masks.set(heads, channels)
    with torch.no_grad(), masks.applied():
        masked = model(X).logits
    pruned = compress_model(model, layers, heads, channels)
    with torch.no_grad():
        compressed = pruned(X).logits
    torch.testing.assert_close(compressed, masked, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    kept = [int(p.sum()) for p in heads.split(2)]
    assert pruned.config.num_key_value_heads_per_layer == kept
    assert pruned.config.num_attention_heads_per_layer == [2 * k for k in kept]
    assert pruned.config.intermediate_size_per_layer == [int(p.sum()) for p in channels.split(48)]
    # generation with the KV cache agrees with generation without it
    prompt = X[:1, :6]
    cached = pruned.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True)
    uncached = pruned.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False)
    assert cached.tolist() == uncached.tolist()


def _pruner(arch="llama", **overrides):
    cfg = dict(sparsity=0.5, max_steps=6, batch_size=2, seq_len=16, init="wanda_sp", seed=1)
    cfg.update(overrides)
    return PolicyGradientPruner(tiny_causal_lm(arch), byte_tokenizer(), PruningConfig(**cfg))


TEXT = "It was the best of times, it was the worst of times. " * 20


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folders = {}
    for arch in ("llama", "qwen3"):
        pruner = _pruner(arch)
        pruner.fit(TEXT, progress=False)
        folder = tmp_path_factory.mktemp(arch)
        pruned = pruner.save_pretrained(folder, perplexity={"before": 9.5, "after": 11.25})
        with torch.no_grad(), pruner.masked():
            masked = pruner.model(X).logits
        folders[arch] = (folder, pruner, pruned, masked)
    return folders


def test_saved_folder_contents(saved):
    folder, pruner, pruned, _ = saved["llama"]
    files = set(os.listdir(folder))
    assert {
        "config.json",
        "model.safetensors",
        "modeling_pruned.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "prune_state.safetensors",
        "README.md",
    } <= files
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "modeling_pruned.PrunedLlamaConfig",
        "AutoModelForCausalLM": "modeling_pruned.PrunedLlamaForCausalLM",
    }
    sizes = pruner.layer_sizes()
    assert config["num_key_value_heads_per_layer"] == sizes["num_key_value_heads"]
    assert config["intermediate_size_per_layer"] == sizes["intermediate_size"]
    assert config["text_config"]["model_type"] == "llama"
    assert config["pruning"]["sparsity"] == 0.5 and config["pruning"]["steps"] == 6
    assert "policy_gradient" in config["pruning"]["method"]
    modeling = (folder / "modeling_pruned.py").read_text()
    assert "hf_faithful" not in modeling.replace("hf-faithful", "")
    tensors, meta = load_prune_state(folder)
    torch.testing.assert_close(tensors["scores_heads"], pruner.scores_heads)
    assert tensors["mask_heads"].sum() == 2 and meta["step"] == 6
    card = (folder / "README.md").read_text()
    params_before = sum(p.numel() for p in pruner.model.parameters())
    assert (
        f"{params_before:,}" in card and f"{sum(p.numel() for p in pruned.parameters()):,}" in card
    )
    assert "11.250" in card and "value: 11.25" in card and "9.500" in card


def test_reload_with_hf_faithful_installed(saved):
    for folder, _, _, masked in saved.values():
        model = AutoModelForCausalLM.from_pretrained(folder)  # registered: no remote code
        assert isinstance(model, PrunedLlamaForCausalLM)
        with torch.no_grad():
            torch.testing.assert_close(model(X).logits, masked, rtol=1e-5, atol=1e-5)


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
    out = {}
    for folder in sys.argv[2:]:
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        x = torch.tensor(json.loads(sys.stdin.readline()))
        with torch.no_grad():
            logits = model(x).logits
        cached = model.generate(x[:1, :6], max_new_tokens=8, do_sample=False, use_cache=True)
        plain = model.generate(x[:1, :6], max_new_tokens=8, do_sample=False, use_cache=False)
        out[folder] = {
            "module": type(model).__module__,
            "logits": logits.tolist(),
            "cached": cached.tolist(),
            "plain": plain.tolist(),
            "params": sum(p.numel() for p in model.parameters()),
        }
    print(json.dumps(out))
    """
)


def test_reload_in_a_clean_process_without_hf_faithful(saved, tmp_path):
    site_packages = next(p for p in site.getsitepackages() if p.endswith("site-packages"))
    folders = [str(v[0]) for v in saved.values()]
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", RELOAD, site_packages, *folders],
        input="\n".join(json.dumps(X.tolist()) for _ in folders) + "\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for folder, _, pruned, masked in saved.values():
        got = results[str(folder)]
        assert got["module"].startswith("transformers_modules.")
        torch.testing.assert_close(torch.tensor(got["logits"]), masked, rtol=1e-5, atol=1e-5)
        assert got["cached"] == got["plain"]
        assert got["params"] == sum(p.numel() for p in pruned.parameters())


class FakeApi:
    def __init__(self):
        self.calls = []
        self.card = None  # README.md as uploaded

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, folder_path, repo_id, **kwargs):
        self.calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path))))
        self.card = (Path(folder_path) / "README.md").read_text()
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


def test_push_to_hub_uploads_the_saved_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    api = FakeApi()
    monkeypatch.setattr("hf_faithful.hub.HfApi", lambda token=None: api)
    pruner = _pruner(max_steps=2)
    pruner.fit(TEXT, progress=False)
    url = pruner.push_to_hub("me/tiny-pruned", private=True)
    assert url == "https://huggingface.co/me/tiny-pruned/commit/abc"
    (name, repo, kwargs), (name2, repo2, files) = api.calls
    assert (name, repo, kwargs["private"]) == ("create_repo", "me/tiny-pruned", True)
    assert name2 == "upload_folder" and {
        "model.safetensors",
        "modeling_pruned.py",
        "README.md",
    } <= set(files)
    # the pushed card loads the repo, not a folder placeholder, and is titled after it
    card = ModelCard(api.card)
    assert 'from_pretrained("me/tiny-pruned", trust_remote_code=True)' in card.text
    assert "path/to/this/folder" not in card.text
    assert card.data.model_name == "tiny-pruned" and "\n# tiny-pruned\n" in card.text
    with pytest.raises(ValueError, match="repo_id"):
        pruner.push_to_hub("not a repo")


def test_killed_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    full = _pruner(max_steps=6, learning_rate=0.3)
    full.fit(TEXT, progress=False)

    killed = _pruner(max_steps=6, learning_rate=0.3, save_steps=2, output_dir=str(tmp_path))
    original = PolicyGradientPruner._sample_losses
    calls = {"n": 0}

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # killed during step 5, after the step-4 checkpoint
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PolicyGradientPruner, "_sample_losses", dying)
    with pytest.raises(KeyboardInterrupt):
        killed.fit(TEXT, progress=False)
    monkeypatch.setattr(PolicyGradientPruner, "_sample_losses", original)
    assert (tmp_path / CHECKPOINT_FILE).is_file() and not list(tmp_path.glob("*.tmp"))

    resumed = _pruner(max_steps=6, learning_rate=0.3, save_steps=2, output_dir=str(tmp_path))
    resumed.fit(TEXT, resume_from_checkpoint=True, progress=False)
    assert resumed.step == 6
    torch.testing.assert_close(resumed.scores_heads, full.scores_heads, rtol=0, atol=1e-6)
    torch.testing.assert_close(resumed.scores_channels, full.scores_channels, rtol=0, atol=1e-6)
    assert resumed.baseline == pytest.approx(full.baseline)


def test_warm_start_from_a_saved_state(saved):
    folder, pruner, _, _ = saved["llama"]
    warm = _pruner(init="state", init_state_path=str(folder), max_steps=0)
    warm.fit(TEXT, progress=False)
    torch.testing.assert_close(warm.scores_heads, pruner.scores_heads)
    assert warm.hard_masks()[1].tolist() == pruner.hard_masks()[1].tolist()
    other = tiny_causal_lm("llama", intermediate_size=40)
    cfg = PruningConfig(init="state", init_state_path=str(folder))
    with pytest.raises(ValueError, match="does not match"):
        PolicyGradientPruner(other, config=cfg).initialize()


def test_from_pretrained_restores_what_save_pretrained_stored(saved):
    folder, pruner, _, _ = saved["llama"]
    model = copy.deepcopy(pruner.model)
    loaded = PolicyGradientPruner.from_pretrained(model, folder, byte_tokenizer())
    assert loaded.config == pruner.config and loaded.initialized
    assert (loaded.step, loaded.baseline, loaded.history) == (
        pruner.step,
        pruner.baseline,
        pruner.history,
    )
    torch.testing.assert_close(loaded.scores_heads, pruner.scores_heads, rtol=0, atol=0)
    torch.testing.assert_close(loaded.scores_channels, pruner.scores_channels, rtol=0, atol=0)
    assert torch.equal(loaded.generator.get_state(), pruner.generator.get_state())
    for a, b in zip(loaded.hard_masks(), pruner.hard_masks()):
        assert a.tolist() == b.tolist()
    # a saved run continues where it stopped, with config fields overridden
    more = PolicyGradientPruner.from_pretrained(model, folder, byte_tokenizer(), max_steps=8)
    assert more.config.max_steps == 8 and more.config.seed == pruner.config.seed
    more.fit(TEXT, progress=False)
    assert more.step == 8
    with pytest.raises(ValueError, match="other layer sizes"):
        PolicyGradientPruner.from_pretrained(tiny_causal_lm("llama", intermediate_size=40), folder)
    with pytest.raises(FileNotFoundError, match="no prune state"):
        PolicyGradientPruner.from_pretrained(model, folder / "missing")


@pytest.mark.slow
def test_lm_eval_cli_evaluates_the_pruned_folder(saved, tmp_path):
    from hf_faithful.evaluation.harness import TASKS_DIR

    folder = saved["llama"][0]
    lm_eval = os.path.join(os.path.dirname(sys.executable), "lm_eval")
    proc = subprocess.run(
        [
            lm_eval,
            "--model",
            "hf",
            "--model_args",
            f"pretrained={folder},trust_remote_code=True",
            "--tasks",
            "hff_cloze",
            "--include_path",
            str(TASKS_DIR),
            "--device",
            "cpu",
            "--limit",
            "4",
            "--batch_size",
            "2",
            "--output_path",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hff_cloze" in proc.stdout and "acc" in proc.stdout


@pytest.fixture(scope="module")
def saved_from_a_local_folder(tmp_path_factory):
    """A pruned model whose base was loaded from a local folder with a licensed card."""
    base = tmp_path_factory.mktemp("bases") / "my-base-lm"
    tiny_causal_lm("llama").save_pretrained(base)
    byte_tokenizer().save_pretrained(base)
    (base / "README.md").write_text(
        "---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# base\n"
    )
    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    assert model.config._name_or_path == str(base)  # what used to leak into the folder
    config = PruningConfig(sparsity=0.5, max_steps=0, batch_size=2, seq_len=16, init="wanda_sp")
    pruner = PolicyGradientPruner(model, tokenizer, config)
    pruner.fit(TEXT, progress=False)
    folder = tmp_path_factory.mktemp("pruned") / "out"
    pruner.save_pretrained(folder)
    return base, folder


def test_saved_folder_holds_nothing_machine_local(saved_from_a_local_folder):
    base, folder = saved_from_a_local_folder
    for name in ("config.json", "tokenizer_config.json", "README.md"):
        text = (folder / name).read_text()
        assert str(base) not in text and str(base.parent) not in text, name
    config = json.loads((folder / "config.json").read_text())
    assert "_name_or_path" not in config and "_name_or_path" not in config["text_config"]
    assert config["pruning"]["base_model"] == "local model my-base-lm"
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert not {"local_files_only", "is_local", "name_or_path"} & set(tokenizer_config)
    # still a working folder
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder)("ab")["input_ids"]
    assert reloaded.config.text_config.model_type == "llama"


def test_pruned_card_carries_the_base_licence(saved_from_a_local_folder):
    _, folder = saved_from_a_local_folder
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "apache-2.0"
    assert card.data.base_model is None  # a local base is no Hub link
    assert "`local model my-base-lm`" in card.text
    assert 'from_pretrained("path/to/this/folder"' in card.text  # not pushed yet


def test_bundled_reference_model_is_named_and_licensed(reference_model):
    model, _ = reference_model
    assert portable_name(model.config._name_or_path) == "hf-faithful reference model"
    assert base_license(model) == {"license": "cc-by-sa-3.0"}


def test_portable_names(tmp_path):
    snapshot = tmp_path / "hub" / "models--meta-llama--Llama-3.2-1B" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert hub_id(snapshot) == portable_name(snapshot) == "meta-llama/Llama-3.2-1B"
    assert portable_name("Qwen/Qwen3-0.6B") == hub_id("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"
    local = tmp_path / "checkpoints" / "step-100"
    local.mkdir(parents=True)
    assert hub_id(local) is None and portable_name(local) == "local model step-100"
    assert portable_name(None) is None and portable_name("") is None


def test_licence_of_a_hub_base_comes_from_the_local_cache_only(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: other\nlicense_name: llama3.2\nlicense_link: LICENSE\n---\n")
    asked = []

    def cached(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        return str(readme) if repo_id == "meta-llama/Llama-3.2-1B" else None

    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", cached)
    model = tiny_causal_lm("llama")
    model.config._name_or_path = "meta-llama/Llama-3.2-1B"
    assert base_license(model) == {
        "license": "other",
        "license_name": "llama3.2",
        "license_link": "LICENSE",
    }
    model.config._name_or_path = "someone/uncached"
    assert base_license(model) == {}
    assert asked == [("meta-llama/Llama-3.2-1B", "README.md"), ("someone/uncached", "README.md")]


def test_retarget_card(saved, tmp_path):
    folder = saved["llama"][0]
    path = tmp_path / "README.md"
    path.write_text((folder / "README.md").read_text())
    retarget_card(path, "me/small-llama")
    card = ModelCard.load(path)
    assert card.data.model_name == "small-llama" and card.text.startswith("\n# small-llama\n")
    assert 'AutoTokenizer.from_pretrained("me/small-llama", trust_remote_code=True)' in card.text
    with pytest.raises(ValueError, match="repo_id"):
        retarget_card(path, "not a repo")

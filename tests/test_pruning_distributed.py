"""Several processes (torch.distributed, gloo, 2 CPU ranks) split the K samples or the
batch rows, sum their losses and end with identical scores, equal to one process.
Also: a model loaded with ``device_map="auto"`` prunes as usual."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hf_faithful.pruning import PolicyGradientPruner, PruningConfig
from hf_faithful.testing.tiny_llama import tiny_causal_lm

torch.set_num_threads(1)

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from hf_faithful.pruning import PolicyGradientPruner, PruningConfig
    from hf_faithful.testing.tiny_llama import tiny_causal_lm

    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # what `accelerate launch --cpu` sets up
    assert dist.get_world_size() == 2
    samples, out = int(sys.argv[1]), sys.argv[2]
    data = torch.randint(0, 256, (8, 16), generator=torch.Generator().manual_seed(0))
    cfg = PruningConfig(init="wanda_sp", num_samples=samples, max_steps=5, batch_size=4,
                        seq_len=16, init_num_samples=8, learning_rate=0.5, seed=2)
    pruner = PolicyGradientPruner(tiny_causal_lm("llama", seed=1), config=cfg)
    pruner.fit(data, progress=False)
    torch.save({"heads": pruner.scores_heads, "channels": pruner.scores_channels,
                "baseline": pruner.baseline}, f"{out}.{dist.get_rank()}.pt")
    dist.barrier()
    """
)


def _single(samples: int):
    data = torch.randint(0, 256, (8, 16), generator=torch.Generator().manual_seed(0))
    cfg = PruningConfig(
        init="wanda_sp",
        num_samples=samples,
        max_steps=5,
        batch_size=4,
        seq_len=16,
        init_num_samples=8,
        learning_rate=0.5,
        seed=2,
    )
    pruner = PolicyGradientPruner(tiny_causal_lm("llama", seed=1), config=cfg)
    pruner.fit(data, progress=False)
    return pruner


@pytest.mark.parametrize("samples", [2, 3])  # 2: split the samples; 3: split the batch rows
def test_two_processes_match_one(samples, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(samples),
            str(tmp_path / "scores"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"scores.{r}.pt") for r in range(2)]
    assert torch.equal(ranks[0]["heads"], ranks[1]["heads"])
    assert torch.equal(ranks[0]["channels"], ranks[1]["channels"])
    assert ranks[0]["baseline"] == ranks[1]["baseline"]
    single = _single(samples)
    torch.testing.assert_close(ranks[0]["heads"], single.scores_heads, rtol=0, atol=1e-5)
    torch.testing.assert_close(ranks[0]["channels"], single.scores_channels, rtol=0, atol=1e-5)
    assert ranks[0]["baseline"] == pytest.approx(single.baseline, rel=1e-6)
    assert not torch.equal(single.scores_channels, _single_init(samples))


def _single_init(samples: int) -> torch.Tensor:
    cfg = PruningConfig(
        init="wanda_sp", num_samples=samples, seq_len=16, init_num_samples=8, seed=2
    )
    pruner = PolicyGradientPruner(tiny_causal_lm("llama", seed=1), config=cfg)
    pruner.initialize(
        torch.randint(0, 256, (8, 16), generator=torch.Generator().manual_seed(0)), progress=False
    )
    return pruner.scores_channels


def test_device_map_auto_model_prunes(tmp_path):
    from transformers import AutoModelForCausalLM

    tiny_causal_lm("qwen3").save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, device_map="auto")
    pruner = PolicyGradientPruner(
        model, config=PruningConfig(max_steps=3, batch_size=2, seq_len=16)
    )
    history = pruner.fit(torch.randint(0, 256, (4, 16)), progress=False)
    assert pruner.step == 3 and history == []  # logging every 10 steps
    pruned = pruner.compress()
    x = torch.randint(0, 256, (1, 10))
    with torch.no_grad(), pruner.masked():
        masked = model(x).logits
    torch.testing.assert_close(pruned(x).logits, masked, rtol=1e-5, atol=1e-5)
    assert json.dumps(pruned.config.pruning)  # provenance is JSON-serializable

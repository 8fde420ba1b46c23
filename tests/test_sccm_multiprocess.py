"""Two CPU processes (``torchrun``, gloo): each rank scores its own rollouts, the SCCM
rewards are gathered for the group advantages (slow: spawns two trainers)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    sys.path.insert(0, os.environ["SCCM_TESTS_DIR"])
    from test_sccm_trainer import config, dataset, make_script
    from pathlib import Path
    from hf_faithful.sccm.trainer import SCCMRewardTrainer
    from hf_faithful.testing.tiny_vlm import load_tiny_vlm, script_generation

    out = Path(sys.argv[1])
    model, processor = load_tiny_vlm(sys.argv[2])
    script_generation(model, processor.tokenizer, make_script(1000 / 128))
    args = config(out, per_device_train_batch_size=2, num_generations=4)
    trainer = SCCMRewardTrainer(model, args=args, train_dataset=dataset(), processing_class=processor)
    trainer.train()
    if trainer.accelerator.is_main_process:
        (out / "log.json").write_text(json.dumps(trainer.state.log_history[0]))
        (out / "world.txt").write_text(str(trainer.accelerator.num_processes))
    """
)


@pytest.mark.slow
def test_two_process_cpu_training(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    from hf_faithful.testing.tiny_vlm import save_tiny_vlm

    model_path = save_tiny_vlm(tmp_path / "tiny")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = os.environ | {"SCCM_TESTS_DIR": os.path.dirname(__file__), "OMP_NUM_THREADS": "1"}
    command = [torchrun, "--nproc_per_node", "2", str(script), str(tmp_path), model_path]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "world.txt").read_text() == "2"
    log = json.loads((tmp_path / "log.json").read_text())
    # Each rank generates 2 of the 4 rollouts of the prompt; the script's rollout variant is
    # the row index within the rank's batch, so both ranks run variants 0 and 1:
    # r_s = [1, 0] and r_m = [0.75, 0] on each rank, gathered over 4 rollouts.
    assert log["rewards/sccm_sufficiency/mean"] == pytest.approx(0.5)
    assert log["rewards/sccm_minimality/mean"] == pytest.approx(0.375)
    assert log["sccm/crops_per_rollout"] == pytest.approx(1.0)

"""`hf-faithful sccm`: options from presets, a YAML file and flags; a one-step run on the
tiny VLM with DeepEyes-layout data saved to disk, saved with its card and pushed (to a
fake Hub)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import load_dataset
from huggingface_hub import ModelCard

from hf_faithful.cli import main
from hf_faithful.sccm.cli import parse_args
from hf_faithful.testing.tiny_vlm import save_tiny_vlm

FIXTURE = (
    Path(__file__).resolve().parent
    / "fixtures"
    / "deepeyes"
    / "deepeyes_visual_toolbox_sample.parquet"
)
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sccm" / "deepeyes.yaml"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return save_tiny_vlm(tmp_path_factory.mktemp("tiny") / "qwen3_vl", family="qwen3_vl")


@pytest.fixture(scope="module")
def deepeyes_on_disk(tmp_path_factory) -> str:
    """DeepEyes' raw parquet layout, saved with save_to_disk."""
    folder = tmp_path_factory.mktemp("data") / "deepeyes"
    load_dataset("parquet", data_files=str(FIXTURE), split="train").save_to_disk(folder)
    return str(folder)


def test_preset_then_yaml_then_flags(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "preset": "smoke",
                "model": "some/model",
                "data": "train.parquet",
                "output_dir": str(tmp_path / "out"),
                "max_completion_length": 48,  # the file overrides the preset (32)
                "num_generations": 4,
                "per_device_train_batch_size": 4,
                "sufficiency_weight": 2.0,
            }
        )
    )
    script, args = parse_args(["--config", str(config), "--sufficiency_weight", "3.0"])
    assert (script.model, script.data, script.preset) == ("some/model", "train.parquet", "smoke")
    assert args.max_completion_length == 48  # file > preset
    assert args.sufficiency_weight == 3.0  # flag > file
    assert args.max_steps == 1 and args.use_cpu  # from the preset
    assert script.accuracy_reward == "exact" and script.format_reward
    # a --preset flag, dashes accepted
    script, args = parse_args(
        [
            "--preset",
            "deepeyes-baseline",
            "--model",
            "m",
            "--data",
            "d",
            "--use-cpu",
            "True",
            "--bf16",
            "False",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert args.num_generations == 16 and args.sufficiency_weight == 0.0


def test_example_config_parses():
    script, args = parse_args(
        ["--config", str(EXAMPLE), "--use_cpu", "True", "--bf16", "False", "--use_vllm", "False"]
    )
    assert script.preset == "deepeyes" and script.accuracy_reward == "judge"
    assert script.data == "ChenShawn/DeepEyes-Datasets-47k"
    assert args.answer_match == "judge" and args.judge_model == "judge"
    assert args.num_generations == 16 and args.reward_weights == [0.8, 0.2]
    assert args.gradient_accumulation_steps == 256
    # DeepEyes' batch: 256 prompts x 16 rollouts per update on 8 GPUs
    assert args.per_device_train_batch_size * 8 * args.gradient_accumulation_steps == 256 * 16
    # the baseline command of examples/sccm/README.md: a --preset flag beats the file's
    cpu = ["--use_cpu", "True", "--bf16", "False", "--use_vllm", "False"]
    script, args = parse_args(["--config", str(EXAMPLE), "--preset", "deepeyes-baseline", *cpu])
    assert script.preset == "deepeyes-baseline"
    assert (args.sufficiency_weight, args.minimality_weight) == (0.0, 0.0)
    assert args.gradient_accumulation_steps == 256  # the file still applies


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "smoke", "--data", "x.parquet"], "--model and --data are required"),
        (
            ["--preset", "smoke", "--model", "m", "--data", "d", "--accuracy_reward", "judge"],
            "needs --judge_model",
        ),
        (["--preset", "smoke", "--model", "m", "--data", "d", "--max_samples", "0"], "max_samples"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(argv, message, capsys, tmp_path):
    assert main(["sccm", *argv, "--output_dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_reward_weights_must_match_the_task_rewards(tmp_path, tiny_model, deepeyes_on_disk, capsys):
    # the deepeyes preset weighs [accuracy, format]; without the accuracy reward it cannot
    argv = ["sccm", "--preset", "deepeyes", "--model", tiny_model, "--data", deepeyes_on_disk]
    argv += ["--accuracy_reward", "none", "--use_cpu", "True", "--bf16", "False"]
    argv += ["--output_dir", str(tmp_path)]
    assert main(argv) == 2
    assert "--reward_weights has 2 weights" in capsys.readouterr().err


class FakeHub:
    """What transformers' Trainer calls to create a repo and upload a folder."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path))))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()


def test_one_step_trains_saves_with_card_and_pushes(
    tmp_path, tiny_model, deepeyes_on_disk, monkeypatch, capsys
):
    hub = FakeHub()
    monkeypatch.setattr("transformers.trainer.hf_api", lambda: hub)
    out = tmp_path / "out"
    code = main(
        [
            "sccm",
            "--preset",
            "smoke",
            "--model",
            tiny_model,
            "--data",
            deepeyes_on_disk,
            "--max_samples",
            "2",
            "--output_dir",
            str(out),
            "--push_to_hub",
            "True",
            "--hub_model_id",
            "me/tiny-sccm",
            "--dataset_name",
            "ChenShawn/DeepEyes-Datasets-47k",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"trained 1 step(s) on 1 process; saved the model and its card to {out}" in printed
    assert "pushed to https://huggingface.co/me/tiny-sccm/commit/1" in printed
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "README.md"} <= files
    assert "preprocessor_config.json" in files or "processor_config.json" in files
    card = ModelCard.load(out / "README.md")
    assert {"sccm", "grpo", "hf-faithful"} <= set(card.data.tags)
    assert card.data.datasets == ["ChenShawn/DeepEyes-Datasets-47k"]
    text = card.text
    assert "| answer_accuracy | 1.0 | user-supplied |" in text
    assert "| answer_format | 1.0 | user-supplied |" in text
    assert "| global_step | 1 |" in text and "rewards/sccm_sufficiency/mean" in text
    assert '"me/tiny-sccm"' in text  # the usage snippet names the repo
    [create, upload] = hub.calls
    assert create == ("create_repo", "me/tiny-sccm")
    assert upload[:2] == ("upload_folder", "me/tiny-sccm") and "README.md" in upload[2]


@pytest.mark.slow
def test_two_processes_with_torchrun(tmp_path, tiny_model, deepeyes_on_disk):
    # The multi-process launch of the docs, on CPU (gloo): `torchrun` (or `accelerate
    # launch`) runs `-m hf_faithful.cli sccm`; only the main process saves and reports.
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    out = tmp_path / "out"
    command = [torchrun, "--nproc_per_node", "2", "-m", "hf_faithful.cli", "sccm"]
    command += ["--preset", "smoke", "--model", tiny_model, "--data", deepeyes_on_disk]
    command += ["--output_dir", str(out)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("saved the model") == 1
    assert "trained 1 step(s) on 2 processes" in result.stdout
    assert {"model.safetensors", "README.md"} <= set(os.listdir(out))

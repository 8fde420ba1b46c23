"""examples/sccm/accelerate/*.yaml: accelerate's own config class reads each one (it refuses
unknown keys), the DeepSpeed keys are options `accelerate launch` knows, and the ZeRO
stages, precision and process counts are the documented ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import launch_command_parser

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "sccm" / "accelerate"
EXPECTED = {
    "multi_gpu.yaml": ("MULTI_GPU", None),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 2),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 3),
}
# what accelerate needs to launch without asking (its `accelerate config` questions)
REQUIRED = ("compute_environment", "distributed_type", "mixed_precision", "num_machines")
REQUIRED += ("num_processes", "machine_rank", "use_cpu")


def test_every_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_reads_the_config(name):
    path = CONFIGS / name
    raw = yaml.safe_load(path.read_text())
    missing = [key for key in REQUIRED if key not in raw]
    assert not missing, f"{name} lacks {missing}"
    config = ClusterConfig.from_yaml_file(str(path))  # ValueError on unknown keys
    distributed_type, stage = EXPECTED[name]
    assert config.distributed_type.value == distributed_type
    assert config.compute_environment.value == "LOCAL_MACHINE"
    assert config.mixed_precision == "bf16" and not config.use_cpu
    assert config.num_processes == 8 and config.num_machines == 1
    if stage is None:
        assert not config.deepspeed_config
        return
    assert config.deepspeed_config["zero_stage"] == stage
    launch_options = {action.dest for action in launch_command_parser()._actions}
    unknown = sorted(set(config.deepspeed_config) - launch_options)
    assert not unknown, f"accelerate launch has no option for {unknown}"
    if stage == 3:
        # sharded weights are gathered into one file when saving, and built sharded
        assert config.deepspeed_config["zero3_save_16bit_model"] is True
        assert config.deepspeed_config["zero3_init_flag"] is True

"""`hf-faithful sccm`: train a thinking-with-images VLM with SCCM rewards, TRL-style.

Every SCCMConfig / GRPOConfig field is a flag (``--learning_rate 1e-6``, dashes also
accepted), and ``--config FILE.yaml`` reads any of them (and the script options below) from
YAML, as ``trl grpo`` does; flags win over the file, the file over ``--preset``. The run
trains, saves the model, processor and SCCM model card to ``--output_dir``, and pushes them
with ``--push_to_hub True --hub_model_id user/name``.

    # one CPU step on a local model and dataset, to check a setup end to end
    hf-faithful sccm --preset smoke --model path/to/qwen-vl --data train.parquet --output_dir out

    # DeepEyes' recipe + SCCM on 8 GPUs (DeepSpeed ZeRO-3, vLLM rollouts, an LLM judge)
    accelerate launch --config_file examples/sccm/accelerate/deepspeed_zero3.yaml \\
        -m hf_faithful.cli sccm --config examples/sccm/deepeyes.yaml

Script options: ``--model`` and ``--data`` (required: a parquet file or glob, a
``save_to_disk`` folder or a Hub dataset id, DeepEyes' layout included), ``--preset``
(``deepeyes``, ``deepeyes-baseline``, ``smoke``), ``--accuracy_reward`` (``exact``,
``judge``: the LLM judge of ``--judge_model`` / ``--judge_base_url``, or ``none``),
``--format_reward``, ``--data_files``, ``--max_samples``, ``--lora_r``, ``--dataset_name``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hf_faithful.sccm.presets import PRESETS

if TYPE_CHECKING:  # the config imports TRL: only when the command runs
    from hf_faithful.sccm.config import SCCMConfig

ACCURACY_REWARDS = ("exact", "judge", "none")


@dataclass
class SCCMScriptArguments:
    """What the run trains on and with which task rewards (the rest is SCCMConfig)."""

    model: str | None = field(
        default=None, metadata={"help": "Model folder or Hub id (Qwen2.5-VL / Qwen3-VL)."}
    )
    data: str | None = field(
        default=None,
        metadata={"help": "Parquet file or glob, save_to_disk folder, or Hub dataset id."},
    )
    data_files: list[str] | None = field(
        default=None, metadata={"help": "Files of a Hub dataset to use (default: all)."}
    )
    split: str = field(default="train", metadata={"help": "Split of a parquet / Hub dataset."})
    max_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows only."}
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": "SCCMConfig preset giving the defaults.",
            "choices": sorted(PRESETS),
        },
    )
    accuracy_reward: str = field(
        default="exact",
        metadata={
            "help": "Accuracy reward: 'exact' match, LLM 'judge' (judge_model), or 'none'.",
            "choices": list(ACCURACY_REWARDS),
        },
    )
    format_reward: bool = field(
        default=True, metadata={"help": "Add DeepEyes' format reward (an <answer> block)."}
    )
    lora_r: int = field(
        default=0, metadata={"help": "Train a LoRA adapter of this rank (0: full fine-tuning)."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id of the training data, for the model card (default: --data)."},
    )


def _preset_from(argv: Sequence[str]) -> str | None:
    """``--preset`` from the command line, else ``preset:`` in the ``--config`` file; read
    before parsing because the preset supplies the defaults the rest overrides."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        import yaml

        with open(argv[argv.index("--config") + 1], encoding="utf-8") as f:
            config = yaml.safe_load(f)
        if isinstance(config, dict):
            return config.get("preset")
    return None


def parse_args(argv: Sequence[str]) -> tuple[SCCMScriptArguments, SCCMConfig]:
    """The script options and the SCCMConfig of ``argv`` (preset < YAML file < flags)."""
    from trl import TrlParser

    from hf_faithful.sccm.config import SCCMConfig, preset_values

    parser = TrlParser(
        (SCCMScriptArguments, SCCMConfig),
        prog="hf-faithful sccm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preset = _preset_from(argv)
    if preset is not None:
        parser.set_defaults(**preset_values(preset))
    script, args = parser.parse_args_and_config(list(argv))
    if not script.model or not script.data:
        raise ValueError("--model and --data are required (in flags or the --config file)")
    if script.max_samples is not None and script.max_samples < 1:
        raise ValueError(f"--max_samples must be >= 1, got {script.max_samples}")
    if script.lora_r < 0:
        raise ValueError(f"--lora_r must be >= 0, got {script.lora_r}")
    if script.accuracy_reward == "judge" and not args.judge_model:
        raise ValueError("--accuracy_reward judge needs --judge_model (and --judge_base_url)")
    return script, args


def _processor(model: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    from hf_faithful.models.vlm_processing import load_vlm_processor

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    processor = load_vlm_processor(model, config.model_type, trust_remote_code=trust_remote_code)
    processor.tokenizer.padding_side = "left"
    return processor


def build_trainer(script: SCCMScriptArguments, args: SCCMConfig) -> Any:
    """The SCCMRewardTrainer of a parsed command line (data loaded, rewards chosen)."""
    from hf_faithful.sccm.data import load_deepeyes
    from hf_faithful.sccm.judge import JudgeAccuracy
    from hf_faithful.sccm.rewards import answer_accuracy, answer_format
    from hf_faithful.sccm.trainer import SCCMRewardTrainer

    dataset = load_deepeyes(script.data, split=script.split, data_files=script.data_files)
    if script.max_samples is not None:
        dataset = dataset.select(range(min(script.max_samples, len(dataset))))
    judge = None
    if script.accuracy_reward == "judge" or args.answer_match == "judge":
        judge = args.build_judge()  # one judge for accuracy and sufficiency
    reward_funcs: list[Any] = []
    if script.accuracy_reward == "exact":
        reward_funcs.append(answer_accuracy)
    elif script.accuracy_reward == "judge":
        reward_funcs.append(JudgeAccuracy(judge))
    if script.format_reward:
        reward_funcs.append(answer_format)
    if args.reward_weights is not None and len(args.reward_weights) != len(reward_funcs):
        names = [getattr(f, "__name__", type(f).__name__) for f in reward_funcs]
        raise ValueError(
            f"--reward_weights has {len(args.reward_weights)} weights for the task rewards "
            f"{names}: give one per reward (the SCCM ones are --sufficiency_weight and "
            "--minimality_weight)"
        )
    peft_config = None
    if script.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=script.lora_r,
            lora_alpha=2 * script.lora_r,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        )
    return SCCMRewardTrainer(
        script.model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=_processor(script.model, args.trust_remote_code),
        peft_config=peft_config,
        answer_match=judge if args.answer_match == "judge" else None,
    )


def _dataset_name(script: SCCMScriptArguments) -> str | None:
    if script.dataset_name:
        return script.dataset_name
    from hf_faithful.hub import REPO_ID_PATTERN

    data = script.data or ""
    return (
        data if "/" in data and REPO_ID_PATTERN.match(data) and not os.path.exists(data) else None
    )


def run(argv: Sequence[str]) -> int:
    """Train, save (weights, processor, SCCM card) and optionally push; returns 0."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # environment_factory is experimental
    script, args = parse_args(argv)
    trainer = build_trainer(script, args)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    dataset_name = _dataset_name(script)
    if args.push_to_hub:
        # saves to output_dir, writes the card (naming the data) and uploads, in one commit;
        # a save_model first would push a commit of its own
        commit = trainer.push_to_hub(dataset_name=dataset_name)
    else:
        trainer.save_model(args.output_dir)
        if dataset_name:  # the card names the data; save_model wrote it without
            trainer.create_model_card(dataset_name=dataset_name, output_dir=args.output_dir)
    if trainer.is_world_process_zero():
        n = trainer.accelerator.num_processes
        print(
            f"hf-faithful sccm: trained {trainer.state.global_step} step(s) on {n} process"
            f"{'es' if n > 1 else ''}; saved the model and its card to {args.output_dir}"
        )
        if args.push_to_hub:
            print(f"hf-faithful sccm: pushed to {getattr(commit, 'commit_url', None) or commit}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sccm``; its options are parsed by TRL's parser (all SCCMConfig fields, YAML)."""
    parser = subparsers.add_parser(
        "sccm",
        help="train with SCCM rewards (GRPO + zoom-in tool); --help lists every option",
        description=__doc__,
        add_help=False,  # --help reaches TRL's parser, which lists every field
        prefix_chars="\0",  # everything after `sccm` is passed on as is
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(func=lambda ns: run(ns.argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(sys.argv[1:]))

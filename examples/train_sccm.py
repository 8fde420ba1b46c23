"""Train a "thinking with images" VLM with SCCM rewards on DeepEyes-style data.

SCCMRewardTrainer is GRPOTrainer plus a DeepEyes zoom-in tool (real multi-turn rollouts)
and two rewards that make the crops sufficient and minimal (arXiv 2510.23482). Here it
is combined with DeepEyes-like accuracy and format rewards.

With no arguments: a few steps on CPU, offline, from hf-faithful's reference VLM (a small
Qwen3-VL trained here to zoom, ``hf_faithful.load_reference_vlm``) on generated ZoomVQA
questions. Its tool use is learned, not scripted, so the logs show real zoom-ins, crops,
sufficiency queries and rewards, in about a minute:

    python examples/train_sccm.py

On real GPUs (every SCCMConfig / GRPOConfig field is a flag; data: a parquet file or a
``save_to_disk`` folder with image, question, answer columns, or DeepEyes' own parquet):

    accelerate launch --num_processes 8 examples/train_sccm.py \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --data data/deepeyes_train.parquet \\
        --output_dir qwen2.5-vl-7b-sccm --bf16 --gradient_checkpointing \\
        --per_device_train_batch_size 4 --num_generations 8 --learning_rate 1e-6 \\
        --max_completion_length 4096 --max_tool_calling_iterations 4 \\
        --use_vllm --vllm_mode colocate --vllm_gpu_memory_utilization 0.4 \\
        --sufficiency_weight 1.0 --minimality_weight 0.5 --report_to wandb

Add ``--lora_r 16`` for a LoRA adapter instead of full fine-tuning, ``--answerer openai
--answerer_model NAME --answerer_base_url http://host:8000/v1`` to let another model answer
the sufficiency queries, ``--box_coords normalized_1000`` is chosen automatically for Qwen3-VL.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from transformers import AutoProcessor, HfArgumentParser  # noqa: E402

from hf_faithful import SCCMConfig, SCCMRewardTrainer  # noqa: E402
from hf_faithful.sccm.data import load_deepeyes  # noqa: E402
from hf_faithful.sccm.rewards import answer_accuracy, answer_format  # noqa: E402

DEMO_QUESTIONS = 16


@dataclass
class ScriptArguments:
    model: str | None = field(
        default=None, metadata={"help": "Model path or Hub id (Qwen2.5-VL / Qwen3-VL)."}
    )
    data: str | None = field(
        default=None, metadata={"help": "Parquet file or save_to_disk folder."}
    )
    lora_r: int = field(
        default=0, metadata={"help": "Train a LoRA adapter of this rank (0: full fine-tuning)."}
    )


def main(argv: list[str] | None = None) -> SCCMRewardTrainer:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # the offline CPU demo
        from hf_faithful.data.zoom_vqa import build_zoom_vqa
        from hf_faithful.models.reference_vlm import load_reference_vlm

        workdir = tempfile.mkdtemp(prefix="sccm-demo-")
        model, processor = load_reference_vlm()
        args = SCCMConfig(
            output_dir=os.path.join(workdir, "out"),
            max_steps=3,
            per_device_train_batch_size=4,
            num_generations=4,
            max_completion_length=256,
            max_tool_calling_iterations=2,
            learning_rate=1e-4,
            temperature=1.0,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            bf16=False,
            use_cpu=True,
            gradient_checkpointing=False,
        )
        data = build_zoom_vqa(n_train=DEMO_QUESTIONS, n_validation=0, n_test=0)
        script, train_dataset = ScriptArguments(), load_deepeyes(data["train"])
    else:
        script, args = HfArgumentParser((ScriptArguments, SCCMConfig)).parse_args_into_dataclasses(
            argv
        )
        if script.model is None or script.data is None:
            raise SystemExit(
                "--model and --data are required (run without arguments for the CPU demo)"
            )
        model = script.model
        processor = AutoProcessor.from_pretrained(script.model, padding_side="left")
        train_dataset = load_deepeyes(script.data)

    peft_config = None
    if script.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=script.lora_r,
            lora_alpha=2 * script.lora_r,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        )
    trainer = SCCMRewardTrainer(
        model,
        reward_funcs=[answer_accuracy, answer_format],
        args=args,
        train_dataset=train_dataset,
        processing_class=processor,
        peft_config=peft_config,
    )
    trainer.train()
    if argv:
        trainer.save_model(args.output_dir)
    return trainer


if __name__ == "__main__":
    trainer = main()
    for entry in trainer.state.log_history:
        if "rewards/sccm_sufficiency/mean" in entry:
            print(
                f"step {entry['step']}: reward {entry['reward']:.3f}  "
                f"sufficiency {entry['rewards/sccm_sufficiency/mean']:.3f}  "
                f"minimality {entry['rewards/sccm_minimality/mean']:.3f}  "
                f"tool calls/rollout {entry['tools/call_frequency']:.2f}"
            )

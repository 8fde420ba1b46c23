"""Train a "thinking with images" VLM with SCCM rewards on DeepEyes-style data.

SCCMRewardTrainer is GRPOTrainer plus a DeepEyes zoom-in tool (real multi-turn rollouts)
and two rewards that make the crops sufficient and minimal (arXiv 2510.23482). Here it
is combined with DeepEyes-like accuracy and format rewards.

With no arguments: a few steps on CPU with a tiny offline Qwen3-VL (random weights) and
a small generated dataset of colored squares. A random model cannot call tools yet, so
in that demo its generation is scripted to zoom into random boxes, which shows every
moving part (tool calls, crops, sufficiency queries, rewards in the logs) in seconds:

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
import random
import sys
import tempfile
from dataclasses import dataclass, field

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from datasets import Dataset  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoProcessor, HfArgumentParser  # noqa: E402

from hf_faithful import SCCMConfig, SCCMRewardTrainer  # noqa: E402
from hf_faithful.sccm.data import load_deepeyes  # noqa: E402
from hf_faithful.sccm.rewards import answer_accuracy, answer_format  # noqa: E402

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (40, 60, 220),
    "yellow": (230, 210, 40),
}


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


def demo_dataset(n: int = 8, seed: int = 0) -> Dataset:
    """Images with one colored square somewhere on a gray background."""
    rng = random.Random(seed)
    rows = {"image": [], "question": [], "answer": []}
    for _ in range(n):
        color = rng.choice(sorted(COLORS))
        image = Image.new("RGB", (128, 128), (128, 128, 128))
        x, y = rng.randrange(0, 96), rng.randrange(0, 96)
        image.paste(COLORS[color], (x, y, x + 32, y + 32))
        rows["image"].append(image)
        rows["question"].append("What color is the square?")
        rows["answer"].append(color)
    return Dataset.from_dict(rows)


def demo_script(seed: int = 0):
    """Scripted turns for the random tiny model: zoom into a random box, then answer."""
    rng = random.Random(seed)

    def script(prompt: str, row: int) -> str:
        if "<tools>" not in prompt:  # a sufficiency query
            return f"<answer>{rng.choice(sorted(COLORS))}</answer>"
        if "<tool_response>" not in prompt:
            x, y, size = rng.randrange(0, 600), rng.randrange(0, 600), rng.randrange(300, 700)
            box = [x, y, min(1000, x + size), min(1000, y + size)]
            return (
                '<think>Let me look closer.</think><tool_call>\n{"name": "image_zoom_in_tool", '
                f'"arguments": {{"bbox_2d": {box}}}}}\n</tool_call>'
            )
        return f"<answer>{rng.choice(sorted(COLORS))}</answer>"

    return script


def main(argv: list[str] | None = None) -> SCCMRewardTrainer:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # the offline CPU demo
        from hf_faithful.testing.tiny_vlm import load_tiny_vlm, save_tiny_vlm, script_generation

        workdir = tempfile.mkdtemp(prefix="sccm-demo-")
        model, processor = load_tiny_vlm(save_tiny_vlm(os.path.join(workdir, "tiny-qwen3-vl")))
        script_generation(model, processor.tokenizer, demo_script())
        args = SCCMConfig(
            output_dir=os.path.join(workdir, "out"),
            max_steps=3,
            per_device_train_batch_size=4,
            num_generations=4,
            max_completion_length=256,
            max_tool_calling_iterations=2,
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            bf16=False,
            use_cpu=True,
            gradient_checkpointing=False,
        )
        script, train_dataset = ScriptArguments(), load_deepeyes(demo_dataset())
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

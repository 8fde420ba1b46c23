"""Time of one SCCMRewardTrainer step over one plain GRPOTrainer step on the same setup.

Same model, data, tool rollouts (the zoom-in environment) and user rewards in both; the
SCCM step adds the sufficiency queries (one batched, gradient-free ``generate`` over the
crops of the rollouts) and the minimality reward. Target: at most 1.3x.

The model is the tiny offline Qwen3-VL with scripted turns (zoom into a box, then answer),
so every rollout makes one real tool call. Wall time per optimizer step is measured with a
callback; the first ``--warmup`` steps are dropped and the median of the rest is reported.

    OMP_NUM_THREADS=1 python benchmarks/bench_sccm_step.py [--steps 8] [--batch 8] [--no-write]

Appends/updates the "## SCCM step time" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from hf_faithful.sccm.config import SCCMConfig  # noqa: E402
from hf_faithful.sccm.data import load_deepeyes  # noqa: E402
from hf_faithful.sccm.environment import ZoomInEnvironment  # noqa: E402
from hf_faithful.sccm.rewards import answer_accuracy  # noqa: E402
from hf_faithful.sccm.trainer import SCCMRewardTrainer  # noqa: E402
from hf_faithful.testing.tiny_vlm import load_tiny_vlm, save_tiny_vlm, script_generation  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## SCCM step time"


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


class TimedReward:
    """Wraps a reward function (same name in the logs) and records its wall time."""

    def __init__(self, func, sink: list[float]):
        self.func, self.sink, self.__name__ = func, sink, func.__name__

    def __call__(self, **kwargs):
        start = time.perf_counter()
        out = self.func(**kwargs)
        self.sink.append(time.perf_counter() - start)
        return out


def script(prompt: str, row: int) -> str:
    if "<tools>" not in prompt:
        return "<answer>red</answer>"
    if "<tool_response>" not in prompt:
        box = [[0, 0, 500, 500], [250, 250, 1000, 1000], [0, 0, 1000, 1000], [500, 0, 1000, 500]][
            row % 4
        ]
        return (
            '<think>zoom</think><tool_call>\n{"name": "image_zoom_in_tool", '
            f'"arguments": {{"bbox_2d": {box}}}}}\n</tool_call>'
        )
    return "<answer>red</answer>"


def run(
    kind: str, path: str, steps: int, batch: int, workdir: str
) -> tuple[list[float], list[float]]:
    """Step wall times, and the time spent in the SCCM rewards per step (SCCM only)."""
    model, processor = load_tiny_vlm(path)
    script_generation(model, processor.tokenizer, script)
    image = Image.new("RGB", (128, 128), (220, 30, 30))
    data = load_deepeyes(
        Dataset.from_dict(
            {"image": [image] * 4, "question": ["What color?"] * 4, "answer": ["red"] * 4}
        )
    )
    common = dict(
        output_dir=os.path.join(workdir, kind),
        max_steps=steps,
        per_device_train_batch_size=batch,
        num_generations=4,
        max_completion_length=256,
        max_tool_calling_iterations=1,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        beta=0.0,
        seed=0,
    )
    timer = StepTimer()
    if kind == "grpo":
        config = SCCMConfig(**common)  # only for box_rules(); the trainer gets a GRPOConfig
        trainer = GRPOTrainer(
            model,
            reward_funcs=[answer_accuracy],
            args=GRPOConfig(**common),
            train_dataset=data,
            processing_class=processor,
            environment_factory=functools.partial(
                ZoomInEnvironment, rules=config.box_rules("qwen3_vl")
            ),
            callbacks=[timer],
        )
    else:
        trainer = SCCMRewardTrainer(
            model,
            reward_funcs=[answer_accuracy],
            args=SCCMConfig(**common, sufficiency_batch_size=batch),
            train_dataset=data,
            processing_class=processor,
            callbacks=[timer],
        )
    reward_times: list[float] = []
    if kind == "sccm":
        n = len(trainer.reward_funcs)
        sink: list[float] = []
        trainer.reward_funcs[n - 2 :] = [
            TimedReward(f, sink) for f in trainer.reward_funcs[n - 2 :]
        ]
    trainer.train()
    if kind == "sccm":  # one generation per step: sufficiency + minimality calls in pairs
        reward_times = [a + b for a, b in zip(sink[::2], sink[1::2])]
    return timer.times, reward_times


def write_results(text: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, atomically."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = current.find(HEADING)
    if start == -1:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        end = current.find("\n## ", start + len(HEADING))
        updated = current[:start] + text + ("" if end == -1 else current[end:])
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(updated)
    os.replace(tmp, RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="rollouts per step")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each trainer")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir:
        path = save_tiny_vlm(os.path.join(workdir, "tiny"))
        times: dict[str, list[float]] = {"grpo": [], "sccm": []}
        sccm_reward: list[float] = []
        for _ in range(args.repeats):  # alternate to spread machine-load drift over both
            for kind in ("grpo", "sccm"):
                step_times, reward_times = run(kind, path, args.steps, args.batch, workdir)
                times[kind] += step_times[args.warmup :]
                sccm_reward += reward_times[args.warmup :]
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["sccm"] / median["grpo"]
    # Same steps, so immune to load drift between runs: SCCM step over the same step
    # without the time spent in the two SCCM rewards.
    paired = statistics.median(
        step / (step - reward) for step, reward in zip(times["sccm"], sccm_reward)
    )
    rows = [
        f"| plain GRPOTrainer + zoom-in tool | {median['grpo'] * 1000:.0f} | {len(times['grpo'])} |",
        f"| SCCMRewardTrainer | {median['sccm'] * 1000:.0f} | {len(times['sccm'])} |",
        f"| (in the two SCCM rewards) | {statistics.median(sccm_reward) * 1000:.0f} | {len(sccm_reward)} |",
    ]
    text = "\n".join(
        [
            HEADING,
            "",
            f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')} python benchmarks/bench_sccm_step.py "
            f"--steps {args.steps} --warmup {args.warmup} --batch {args.batch} --repeats {args.repeats}`",
            f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores (shared), torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s); {time.strftime('%Y-%m-%d', time.gmtime())}; "
            f"1-min load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end "
            "(other jobs share the machine, so step times vary between runs).",
            "Setup: tiny offline Qwen3-VL (70k params), scripted turns (one zoom-in per rollout, then an "
            f"answer), {args.batch} rollouts per step (4 per prompt), same data and accuracy reward in both.",
            "",
            "| trainer | median step (ms) | steps timed |",
            "|---|---|---|",
            *rows,
            "",
            f"**SCCM / GRPO step time: {ratio:.2f}x** (ratio of medians across runs, target <= 1.3x); "
            f"**{paired:.2f}x** measured within the same SCCM steps (step time over step time minus the "
            "SCCM rewards), which machine-load drift between runs cannot skew.",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_results(text)


if __name__ == "__main__":
    main()

"""The paper's experiment in miniature: plain GRPO against SCCM, from the same SFT checkpoint.

Subject: a reference VLM trained by ``scripts/train_reference_vlm.py`` (``--model``; no such
model is bundled yet, see that script's status). Both arms start from it, run the same real multi-turn zoom-in rollouts on the ZoomVQA train split,
with the same steps, seeds, batch and learning rate:

- (a) ``GRPOTrainer`` with accuracy + format rewards (DeepEyes' 0.8 / 0.2 weights);
- (b) ``SCCMRewardTrainer`` with the same two rewards + sufficiency + minimality.

Each trained model (and the SFT start) is measured on the held-out test split with the
project's own evaluator, separately per question type: accuracy; ATE_T and ATE_V with
intervals (control baseline, offline text corruptions, Gaussian-noise crops); sufficiency
rate (the model itself answers from the crops alone, the judge's sufficiency query); mean
crop area as a fraction of the image (union of a trace's crops); IoU of the best crop with
the target box. Arms are summarized as mean and standard deviation over seeds.

    python benchmarks/bench_sccm_experiment.py --model DIR          # 3 seeds, CPU
    python benchmarks/bench_sccm_experiment.py --steps 2 --seeds 0 --n-test 16 --no-write

On a GPU (the same figures with longer training; add ``--device cuda``):

    python benchmarks/bench_sccm_experiment.py --steps 200 --seeds 0 1 2 3 4 --n-test 1000

Writes ``benchmarks/results/sccm_experiment.json`` and the "## SCCM experiment" section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    command_line,
    machine_info,
    machine_line,
    markdown_table,
    update_section,
    write_json,
)
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from hf_faithful.data.zoom_vqa import CANVAS, CHANCE, build_zoom_vqa  # noqa: E402
from hf_faithful.mcot.answers import answers_match  # noqa: E402
from hf_faithful.mcot.zoom import Box, BoxRules, normalize_box  # noqa: E402
from hf_faithful.models.reference_vlm import REFERENCE_VLM_DIR, load_reference_vlm  # noqa: E402
from hf_faithful.sccm.config import SCCMConfig  # noqa: E402
from hf_faithful.sccm.environment import ZoomInEnvironment  # noqa: E402
from hf_faithful.sccm.rewards import answer_accuracy, answer_format, union_area  # noqa: E402
from hf_faithful.sccm.trainer import SCCMRewardTrainer  # noqa: E402

RESULTS_JSON = Path(__file__).with_name("results") / "sccm_experiment.json"
HEADING = "## SCCM experiment (GRPO vs SCCM on the reference VLM)"
RULES = BoxRules(coords="normalized_1000")
TYPES = ("zoom_needed", "global")


def train_arm(arm: str, seed: int, dataset, args: argparse.Namespace, workdir: str):
    """Train one arm from the SFT checkpoint; returns ``(model, processor, seconds)``."""
    model, processor = load_reference_vlm(args.model)
    common = dict(
        output_dir=os.path.join(workdir, f"{arm}-{seed}"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        num_generations=args.generations,
        max_completion_length=256,
        max_tool_calling_iterations=2,
        learning_rate=args.lr,
        temperature=1.0,
        beta=0.0,
        seed=seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=False,
        use_cpu=args.device == "cpu",
        gradient_checkpointing=False,
        disable_tqdm=True,
    )
    started = time.perf_counter()
    if arm == "grpo":
        trainer = GRPOTrainer(
            model,
            reward_funcs=[answer_accuracy, answer_format],
            args=GRPOConfig(**common, reward_weights=[0.8, 0.2]),
            train_dataset=dataset,
            processing_class=processor,
            environment_factory=functools.partial(ZoomInEnvironment, rules=RULES),
        )
    else:
        trainer = SCCMRewardTrainer(
            model,
            reward_funcs=[answer_accuracy, answer_format],
            args=SCCMConfig(
                **common,
                reward_weights=[0.8, 0.2],
                sufficiency_weight=args.sufficiency_weight,
                minimality_weight=args.minimality_weight,
            ),
            train_dataset=dataset,
            processing_class=processor,
        )
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    return model, processor, time.perf_counter() - started


def _crop_geometry(trace, target_box: list[int]) -> tuple[float | None, float | None]:
    """(union area of the crops / image area, best IoU of a crop with the target box)."""
    boxes = [
        normalize_box(s.bbox, (CANVAS, CANVAS), RULES)
        for s in trace.zoom_steps
        if s.crop is not None
    ]
    if not boxes:
        return None, None
    area = union_area(boxes) / (CANVAS * CANVAS)
    if not target_box:
        return area, None
    return area, max(b.iou(Box(*target_box)) for b in boxes)


def _interval(effect) -> list[float] | None:
    if effect is None:
        return None
    return [effect.ate, effect.ci_low, effect.ci_high]


def measure(model, processor, test, n_resamples: int) -> dict[str, Any]:
    """The evaluator's figures per question type on the test split."""
    from hf_faithful.faithfulness.config import FaithfulnessConfig
    from hf_faithful.faithfulness.evaluator import FaithfulnessEvaluator
    from hf_faithful.mcot.backends import LocalVLMBackend

    backend = LocalVLMBackend(model, processor, batch_size=16)
    config = FaithfulnessConfig(
        box_rules=RULES,
        max_turn_tokens=96,
        max_tool_calls=2,
        visual_interventions=("noise_gaussian",),
        judge_metrics=("sufficiency",),
        n_resamples=n_resamples,
    )
    evaluator = FaithfulnessEvaluator(backend, judge=backend, config=config)
    rows = [
        {"image": r["image"], "question": r["question"], "reference": r["answer"], "id": r["id"]}
        for r in test
    ]
    traces = evaluator.generate_traces(rows)
    out: dict[str, Any] = {}
    for qtype in TYPES:
        idx = [i for i, r in enumerate(test) if r["question_type"] == qtype]
        report = evaluator.evaluate([traces[i] for i in idx])
        geometry = [_crop_geometry(traces[i], test[i]["target_box"]) for i in idx]
        areas = [a for a, _ in geometry if a is not None]
        ious = [u for _, u in geometry if u is not None]
        correct = [
            traces[i].valid and answers_match(traces[i].answer, test[i]["answer"]) for i in idx
        ]
        out[qtype] = {
            "n": len(idx),
            "accuracy": sum(correct) / len(idx),
            "ate_t": _interval(report.ate_t),
            "ate_v": _interval(report.ate_v),
            "sufficiency": report.sufficiency.mean if report.sufficiency else None,
            "tool_call_rate": sum(bool(traces[i].crops) for i in idx) / len(idx),
            "crop_area": statistics.fmean(areas) if areas else None,
            "crop_iou": statistics.fmean(ious) if ious else None,
        }
    return out


def _mean_sd(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(results: dict[str, Any]) -> str:
    rows = []
    for qtype in TYPES:
        for arm in ("sft", "grpo", "sccm"):
            runs = results["arms"].get(arm, [])
            if not runs:
                continue
            figures = [r["figures"][qtype] for r in runs]

            def pick(key, figures=figures):
                return [f[key] for f in figures]

            def ate(key, figures=figures):
                runs_ = [f[key] for f in figures if f[key] is not None]
                if len(runs_) == 1:
                    e, lo, hi = runs_[0]
                    return f"{e:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                return _mean_sd([r[0] for r in runs_])

            rows.append(
                [
                    qtype,
                    arm,
                    len(runs),
                    _mean_sd(pick("accuracy")),
                    ate("ate_t"),
                    ate("ate_v"),
                    _mean_sd(pick("sufficiency")),
                    _mean_sd(pick("crop_area")),
                    _mean_sd(pick("crop_iou")),
                    _mean_sd(pick("tool_call_rate")),
                ]
            )
    header = [
        "questions", "arm", "seeds", "accuracy", "ATE_T", "ATE_V", "sufficiency",
        "crop area", "crop IoU", "tool calls",
    ]  # fmt: skip
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REFERENCE_VLM_DIR))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=8, help="rollouts per step")
    parser.add_argument("--generations", type=int, default=4, help="rollouts per prompt")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--sufficiency-weight", type=float, default=1.0)
    parser.add_argument("--minimality-weight", type=float, default=0.5)
    parser.add_argument("--n-test", type=int, default=120)
    parser.add_argument("--n-resamples", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = build_zoom_vqa(n_train=args.steps * args.batch, n_validation=0, n_test=args.n_test)
    train, test = data["train"], data["test"]
    results: dict[str, Any] = {"settings": vars(args), "arms": {"sft": [], "grpo": [], "sccm": []}}
    model, processor = load_reference_vlm(args.model)
    results["arms"]["sft"].append(
        {"seed": None, "figures": measure(model, processor, test, args.n_resamples)}
    )
    print(f"SFT measured ({time.perf_counter() - started:.0f}s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="sccm-experiment-") as workdir:
        for seed in args.seeds:
            for arm in ("grpo", "sccm"):
                model, processor, seconds = train_arm(arm, seed, train, args, workdir)
                figures = measure(model, processor, test, args.n_resamples)
                results["arms"][arm].append(
                    {"seed": seed, "train_seconds": seconds, "figures": figures}
                )
                print(
                    f"{arm} seed {seed}: trained in {seconds:.0f}s, zoom-needed accuracy "
                    f"{figures['zoom_needed']['accuracy']:.3f} "
                    f"({time.perf_counter() - started:.0f}s)",
                    flush=True,
                )
    results["minutes"] = (time.perf_counter() - started) / 60
    results["chance"] = CHANCE
    info = machine_info(args.device)
    results["machine"] = info
    results["command"] = command_line()
    body = table(results)
    print(body)
    if not args.no_write:
        write_json(RESULTS_JSON, results)
        update_section(
            HEADING,
            f"Command: `{results['command']}` ({results['minutes']:.0f} min)\n"
            f"Machine: {machine_line(info)}\n\n{body}\n",
        )
    return results


if __name__ == "__main__":
    main()

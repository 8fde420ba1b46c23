"""What LoRA recovery buys after pruning: perplexity and lm-eval accuracy before/after,
training time and peak memory, at 30% and 50% sparsity.

For each sparsity the model is pruned with ``--method`` (as ``hf-faithful prune
--method``; the default ``pg`` is the compensated policy gradient, ``--prune-steps``
steps on the bundled calibration text) and saved, its time and peak memory measured, then
``recover`` fine-tunes the saved folder with the ``RecoveryConfig`` defaults (rank 8,
alpha 16, lr 2e-4, 200 steps of 8 x 128 tokens on the same calibration text) unless the
options below change them. Measured on the pruned model before recovery and on the
merged model after:
- WikiText-2 test perplexity, 128-token protocol (``--ppl-chunks`` evaluates the first N
  chunks only); the recovery text (last 30% of WikiText-2 valid) is disjoint from it;
- lm-eval ``--tasks`` (default: the bundled ``hff_cloze``; on a GPU with Hub access, e.g.
  ``arc_easy piqa hellaswag``), ``--task-limit`` documents each;
- recovery cost: training seconds (wall), wall and process CPU seconds of the whole
  ``recover`` call (evaluations included), and peak memory during it (CUDA: max
  allocated; CPU: resident high-water mark above the resident size before the call).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_recovery.py            # reference model
    python benchmarks/bench_recovery.py --model meta-llama/Llama-3.2-1B --device cuda \\
        --tasks arc_easy piqa hellaswag --prune-steps 300

Writes benchmarks/results/recovery[-<model>].json and the "## Recovery fine-tuning"
section of benchmarks/RESULTS.md (unless ``--no-write`` or ``--quick``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from hf_faithful.corpora import calibration_text  # noqa: E402
from hf_faithful.evaluation.harness import evaluate_with_lm_eval  # noqa: E402
from hf_faithful.pruning import PolicyGradientPruner, PruningConfig  # noqa: E402
from hf_faithful.pruning.config import METHODS  # noqa: E402
from hf_faithful.pruning.recover import RecoveryConfig, recover  # noqa: E402

HEADING = "## Recovery fine-tuning"


def measured(fn, device: str) -> tuple[float, float, float]:
    """``(wall s, process CPU s, peak MiB)`` of ``fn()``; the peak is the high-water mark
    above what was held before the call (CUDA: allocated since a reset)."""
    before = 0.0 if device.startswith("cuda") else common.current_mb(device)
    common.reset_peak(device)
    wall, cpu = common.timed(fn, device)
    return wall, cpu, common.peak_mb(device) - before


def prune(model, tokenizer, sparsity: float, args, folder: Path) -> dict[str, Any]:
    """Prune ``model`` (left untouched) to ``sparsity`` with ``--method`` and save the
    folder; the pruning's time and peak memory are measured as the recovery's are."""
    overrides: dict[str, Any] = dict(
        sparsity=sparsity,
        seq_len=args.seq_len,
        batch_size=args.prune_batch_size,
        init_num_samples=args.init_samples,
        seed=0,
    )
    if args.method == "pg":
        overrides["max_steps"] = args.prune_steps
    if args.compensate is not None:
        overrides["compensate"] = args.compensate == "on"
    config = PruningConfig.for_method(args.method, **overrides)
    pruner = PolicyGradientPruner(model, tokenizer, config)
    wall, cpu, peak = measured(lambda: pruner.fit(calibration_text(), progress=False), args.device)
    pruned = pruner.save_pretrained(folder)
    return {
        "prune_wall_s": wall,
        "prune_cpu_s": cpu,
        "prune_peak_memory_mb": peak,
        "prune_method": pruner.provenance()["method"],
        "params_pruned": common.count_params(pruned),
    }


def tasks(model, tokenizer, args) -> dict[str, float]:
    """Accuracy (acc_norm when the task has it) per lm-eval task."""
    if not args.tasks:
        return {}
    results = evaluate_with_lm_eval(
        model, tokenizer, args.tasks, limit=args.task_limit, device=args.device
    )
    return {t: m.get("acc_norm", m.get("acc", float("nan"))) for t, m in results.items()}


def recovery_run(folder: Path, out: Path, args) -> dict[str, Any]:
    overrides = {
        k: v
        for k, v in (
            ("max_steps", args.steps),
            ("batch_size", args.batch_size),
            ("learning_rate", args.lr),
            ("rank", args.rank),
            ("seq_len", args.seq_len),
        )
        if v is not None
    }
    config = RecoveryConfig(
        output_dir=str(out),
        eval_chunks=args.ppl_chunks,
        device="cuda" if args.device.startswith("cuda") else "cpu",
        dtype=args.dtype,
        save_steps=0,
        save_adapter=False,
        **overrides,
    )
    holder: dict[str, Any] = {}
    wall, cpu, peak = measured(
        lambda: holder.update(result=recover(folder, config, progress=not args.quiet)),
        args.device,
    )
    result = holder["result"]
    return {
        "result": result,
        "ppl_before": result.perplexity["before"],
        "ppl_after": result.perplexity["after"],
        "train_s": result.summary["train_seconds"],
        "recover_wall_s": wall,
        "recover_cpu_s": cpu,
        "peak_memory_mb": peak,
        "train_loss": result.summary["train_loss"],
        "settings": {k: result.summary[k] for k in ("steps", "rank", "alpha", "learning_rate")}
        | {"tokens_per_step": result.summary["tokens_per_step"]},
    }


def report(rows: list[dict], meta: dict) -> str:
    task_names = sorted({t for r in rows for t in r["tasks_after"]})
    header = ["sparsity", "parameters", "ppl pruned", "ppl recovered"]
    header += [f"{t} pruned -> recovered" for t in task_names]
    header += ["pruning (s)", "recovery training (s)", "recover call (s)"]
    header += ["peak memory prune / recover (MiB)"]
    body = []
    for r in rows:
        cells = [
            f"{r['sparsity']:.0%}",
            f"{r['params_pruned']:,}",
            f"{r['ppl_before']:.2f}",
            f"**{r['ppl_after']:.2f}**",
        ]
        cells += [
            f"{100 * r['tasks_before'][t]:.1f} -> {100 * r['tasks_after'][t]:.1f}"
            for t in task_names
        ]
        cells += [
            f"{r['prune_wall_s']:.0f}",
            f"{r['train_s']:.0f}",
            f"{r['recover_wall_s']:.0f}",
            f"{r.get('prune_peak_memory_mb', float('nan')):.0f} / {r['peak_memory_mb']:.0f}",
        ]
        body.append(cells)
    dense = meta["dense"]
    dense_tasks = ", ".join(f"{t} {100 * v:.1f}" for t, v in dense["tasks"].items())
    settings = rows[0]["settings"] if rows else {}
    return (
        f"{common.provenance_block(meta['machine'], meta['command'])}\n\n"
        f"Model: `{meta['model']}` ({dense['params']:,} parameters; dense WikiText-2 test "
        f"perplexity {dense['ppl']:.2f}{'; ' + dense_tasks if dense_tasks else ''}). Pruned "
        f"with {meta['prune']}; recovered with LoRA rank {settings.get('rank')}, alpha "
        f"{settings.get('alpha')}, lr {settings.get('learning_rate')}, {settings.get('steps')} "
        f"steps of {settings.get('tokens_per_step')} tokens on the bundled calibration text "
        "(last 30% of WikiText-2 valid), merged into the weights. Perplexity: WikiText-2 test, "
        f"128-token protocol, {meta['ppl_chunks']}; accuracy in percent, acc_norm where the "
        f"task has it ({meta['task_limit']}). Peak memory: resident (CPU) or allocated (CUDA) "
        "high-water mark above what was held before the call; the pruning starts with the "
        "dense model already loaded, the recover call loads the pruned folder itself.\n\n"
        + common.markdown_table(header, body)
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(p)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--method", default="pg", choices=sorted(METHODS),
                   help="pruning method, as `hf-faithful prune --method` (pg: compensated)")  # fmt: skip
    p.add_argument("--compensate", default=None, choices=["on", "off"],
                   help="override the method's bias compensation")  # fmt: skip
    p.add_argument("--prune-steps", type=int, default=100, help="PG steps (--method pg)")
    p.add_argument("--prune-batch-size", type=int, default=8)
    p.add_argument("--init-samples", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="recovery steps (default: config)")
    p.add_argument("--batch-size", type=int, default=None, help="recovery batch")
    p.add_argument("--lr", type=float, default=None, help="recovery learning rate")
    p.add_argument("--rank", type=int, default=None, help="LoRA rank")
    p.add_argument("--ppl-chunks", type=int, default=None, help="first N test chunks (all)")
    p.add_argument("--tasks", nargs="*", default=["hff_cloze"], help="lm-eval tasks")
    p.add_argument("--task-limit", type=int, default=300, help="documents per task")
    p.add_argument("--keep", type=Path, default=None, help="keep the folders here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.quick:
        if args.model == "reference":
            args.model = "random:tiny"
        args.sparsities, args.prune_steps, args.prune_batch_size = [0.5], 2, 2
        args.init_samples, args.seq_len, args.steps, args.batch_size = 4, 32, 3, 2
        args.lr, args.ppl_chunks, args.task_limit, args.quiet = 1e-2, 4, 4, True
    if args.device == "cpu":
        torch.set_num_threads(1)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    info = common.machine_info(args.device)
    command = common.command_line()
    model, tokenizer = common.load_model(args.model, device=args.device, dtype=args.dtype)
    if tokenizer is None:
        raise ValueError(f"--model {args.model}: the recovery benchmark needs a tokenizer")
    from hf_faithful.evaluation.perplexity import perplexity

    dense = {
        "params": common.count_params(model),
        "ppl": perplexity(
            model, tokenizer, seq_len=args.seq_len, max_chunks=args.ppl_chunks, progress=False
        ),
        "tasks": tasks(model, tokenizer, args),
    }
    rows = []
    start = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for sparsity in args.sparsities:
            folder = root / f"pruned-{int(round(100 * sparsity))}"
            row: dict[str, Any] = {
                "sparsity": sparsity,
                **prune(model, tokenizer, sparsity, args, folder),
            }
            pruned, pruned_tok = common.load_model(
                str(folder), device=args.device, dtype=args.dtype
            )
            row["tasks_before"] = tasks(pruned, pruned_tok, args)
            del pruned
            run = recovery_run(folder, root / f"recovered-{int(round(100 * sparsity))}", args)
            result = run.pop("result")
            row.update(run)
            row["tasks_after"] = tasks(result.model, result.tokenizer, args)
            rows.append(row)
            del result
    meta = {
        "model": args.model,
        "machine": info,
        "command": command,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "dense": dense,
        "prune": rows[0]["prune_method"] if rows else args.method,
        "ppl_chunks": f"first {args.ppl_chunks} chunks" if args.ppl_chunks else "all chunks",
        "task_limit": f"first {args.task_limit} documents per task",
        "cpu_s": time.process_time() - start,
    }
    text = report(rows, meta)
    print(text)
    data = {"meta": meta, "results": rows}
    if args.output and (args.no_write or args.quick):
        common.write_json(args.output, data)
    if not (args.no_write or args.quick):
        tag = common.model_tag(args.model)
        name = f"recovery-{tag}.json" if tag else "recovery.json"
        common.write_json(args.output or common.RESULTS_DIR / name, data)
        common.update_section(f"{HEADING} ({tag})" if tag else HEADING, text)
    return data


if __name__ == "__main__":
    main()

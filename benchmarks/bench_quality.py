"""Pruning quality side by side: dense, random, magnitude, Wanda-sp, FLAP and
policy-gradient (PG) pruning at several sparsities, with global and per-layer budgets.

Every method prunes KV-head groups and MLP channels (``target="both"``), sees the same
calibration data (the bundled calibration text, cut into 128-token chunks; the
activation statistics use the same ``--init-samples`` chunks) and is evaluated as a
physically compressed model on
- WikiText-2 test perplexity with the paper's protocol (non-overlapping 128-token
  chunks; ``--ppl-chunks`` evaluates the first N chunks only, to save time), and
- accuracy on the bundled 4-choice cloze task ``hff_cloze`` (lm-eval, ``--cloze-limit``
  items).
The one-shot baselines are ``PolicyGradientPruner`` with ``max_steps=0`` (its
initialization alone: metric -> sigmap -> budget -> top-k); a global budget therefore
ranks the per-layer standardized metrics, as FLAP does. PG starts from the Wanda-sp
initialization and reports the median over ``--seeds`` with the spread, and the
perplexity of its own initialization for each seed.

``--sweep`` instead measures, at one sparsity, what PG's settings buy (steps, learning
rate, K, estimator, budget, initialization, calibration size), each against the same
Wanda-sp initialization.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_quality.py [--model reference]
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_quality.py --sweep

Writes benchmarks/results/quality.json (quality-sweep.json) and the "## Pruning
quality" ("## PG tuning sweep") section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from hf_faithful.corpora import calibration_text, wikitext2_test  # noqa: E402
from hf_faithful.evaluation.harness import evaluate_with_lm_eval  # noqa: E402
from hf_faithful.evaluation.perplexity import perplexity, tokenize_text  # noqa: E402
from hf_faithful.pruning import PolicyGradientPruner, PruningConfig  # noqa: E402

BASELINES = ("random", "magnitude", "wanda_sp", "flap")
LABELS = {
    "dense": "dense",
    "random": "random",
    "magnitude": "magnitude",
    "wanda_sp": "Wanda-sp",
    "flap": "FLAP",
    "pg": "PG (Wanda-sp init)",
}


def fingerprint(model: torch.nn.Module) -> float:
    """Cheap checksum: pruning must leave the source model untouched."""
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


class Evaluator:
    def __init__(self, tokenizer, args):
        self.tokenizer = tokenizer
        self.args = args
        self.test_ids = tokenize_text(tokenizer, wikitext2_test())
        total = self.test_ids.numel() // args.seq_len
        self.ppl_chunks = min(args.ppl_chunks or total, total)
        self.total_chunks = total

    def ppl(self, model) -> float:
        return perplexity(
            model,
            input_ids=self.test_ids,
            seq_len=self.args.seq_len,
            max_chunks=self.ppl_chunks,
            device=self.args.device,
            progress=False,
        )

    def cloze(self, model) -> dict[str, float] | None:
        if self.args.cloze_limit == 0:
            return None
        results = evaluate_with_lm_eval(
            model,
            self.tokenizer,
            ["hff_cloze"],
            limit=self.args.cloze_limit,
            device=self.args.device,
        )["hff_cloze"]
        return {"acc": results["acc"], "acc_stderr": results.get("acc_stderr")}

    def __call__(self, model, *, cloze: bool = True) -> dict[str, Any]:
        out = {"ppl": self.ppl(model), "params": common.count_params(model)}
        if cloze:
            out["cloze"] = self.cloze(model)
        return out


def make_pruner(model, tokenizer, args, **overrides) -> PolicyGradientPruner:
    values = dict(
        sparsity=0.5,
        budget="global",
        target="both",
        init="wanda_sp",
        max_steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        num_samples=args.num_samples,
        learning_rate=args.lr,
        estimator=args.estimator,
        init_num_samples=args.init_samples,
        logging_steps=10,
        seed=0,
    )
    values.update(overrides)
    return PolicyGradientPruner(model, tokenizer, PruningConfig(**values))


def one_shot(model, tokenizer, chunks, evaluate, args, *, cloze=True, **overrides) -> dict:
    pruner = make_pruner(model, tokenizer, args, max_steps=0, **overrides)
    wall, cpu = common.timed(lambda: pruner.initialize(chunks, progress=False))
    pruned = pruner.compress()
    out = evaluate(pruned, cloze=cloze)
    out.update(prune_cpu_s=cpu, prune_wall_s=wall, layer_sizes=pruner.layer_sizes())
    return out


def policy_gradient(model, tokenizer, chunks, evaluate, args, *, cloze=True, **overrides) -> dict:
    pruner = make_pruner(model, tokenizer, args, **overrides)
    pruner.initialize(chunks, progress=False)
    init_ppl = evaluate.ppl(pruner.compress())
    wall, cpu = common.timed(lambda: pruner.fit(chunks, progress=not args.quiet))
    pruned = pruner.compress()
    out = evaluate(pruned, cloze=cloze)
    losses = [h["loss"] for h in pruner.history if "loss" in h]
    out.update(
        init_ppl=init_ppl,
        steps=pruner.step,
        prune_cpu_s=cpu,
        prune_wall_s=wall,
        layer_sizes=pruner.layer_sizes(),
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        skipped_steps=pruner.skipped_steps,
    )
    return out


def summarize_seeds(runs: list[dict]) -> dict:
    ppls = [r["ppl"] for r in runs]
    accs = [r["cloze"]["acc"] for r in runs if r.get("cloze")]
    med = statistics.median(ppls)
    return {
        "ppl": med,
        "ppl_min": min(ppls),
        "ppl_max": max(ppls),
        "init_ppl": statistics.median(r["init_ppl"] for r in runs),
        "cloze": {"acc": statistics.median(accs)} if accs else None,
        "cloze_min": min(accs) if accs else None,
        "cloze_max": max(accs) if accs else None,
        "params": runs[0]["params"],
        "prune_cpu_s": statistics.median(r["prune_cpu_s"] for r in runs),
        "seeds": runs,
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def grid(model, tokenizer, chunks, evaluate, args, partial: Path | None = None) -> dict:
    """Every method x budget x sparsity; with ``partial``, each result is saved as soon
    as it exists and a rerun skips what is already there (the run is resumable)."""
    results: dict[str, Any] = {}
    if partial is not None and partial.exists():
        results = json.loads(partial.read_text())
        log(f"resuming: {len(results)} results in {partial}")

    def done(key: str, value: dict) -> None:
        results[key] = value
        if partial is not None:
            common.write_json(partial, results)

    if "dense" not in results:
        done("dense", evaluate(model))
    log(f"dense: ppl {results['dense']['ppl']:.2f}")
    for sparsity in sorted(args.sparsities, reverse=True):  # the headline sparsity first
        for budget in args.budgets:
            key = f"{budget}/{sparsity}"
            for method in args.methods:
                if method == "dense" or f"{key}/{method}" in results:
                    continue
                if method == "pg":
                    if args.pg_sparsities and sparsity not in args.pg_sparsities:
                        continue
                    runs = []
                    for seed in args.seeds:
                        runs.append(
                            policy_gradient(
                                model,
                                tokenizer,
                                chunks,
                                evaluate,
                                args,
                                sparsity=sparsity,
                                budget=budget,
                                seed=seed,
                            )  # fmt: skip
                        )
                        log(f"{key} pg seed {seed}: ppl {runs[-1]['ppl']:.2f} "
                            f"(init {runs[-1]['init_ppl']:.2f})")  # fmt: skip
                    done(f"{key}/pg", summarize_seeds(runs))
                else:
                    done(
                        f"{key}/{method}",
                        one_shot(
                            model,
                            tokenizer,
                            chunks,
                            evaluate,
                            args,
                            sparsity=sparsity,
                            budget=budget,
                            init=method,
                        ),  # fmt: skip
                    )
                    log(f"{key} {method}: ppl {results[f'{key}/{method}']['ppl']:.2f}")
    return results


def sweep(model, tokenizer, chunks, evaluate, args, partial: Path | None = None) -> dict:
    """PG settings at one sparsity (global budget unless varied), seed 0, perplexity only.

    Rows run in order of interest and, with ``partial``, are saved as they finish (a
    rerun skips the rows already there)."""
    s = args.sweep_sparsity
    base = {"sparsity": s, "budget": "global"}
    variants: list[tuple[str, str, dict]] = [
        ("one-shot", "Wanda-sp init only (128 calibration chunks)", {"init": "wanda_sp"}),
        ("pg", f"PG default ({args.steps} steps, lr {args.lr:g}, K {args.num_samples}, "
               f"{args.estimator})", {}),
        ("pg", f"lr {args.lr * 10:g}", {"learning_rate": args.lr * 10}),
        ("pg", "reinforce estimator", {"estimator": "reinforce"}),
        ("pg", f"{args.steps * 3} steps", {"max_steps": args.steps * 3}),
        ("pg", "K = 4", {"num_samples": 4}),
        ("pg", f"lr {args.lr * 4:g}", {"learning_rate": args.lr * 4}),
        ("pg", "per-layer budget", {"budget": "layer"}),
        ("one-shot", "magnitude init only", {"init": "magnitude"}),
        ("pg", "PG from the magnitude init", {"init": "magnitude"}),
        ("one-shot", "Wanda-sp init only, 32 calibration chunks", {"init_num_samples": 32}),
        ("one-shot", "Wanda-sp init only, 512 calibration chunks", {"init_num_samples": 512}),
    ]  # fmt: skip
    if args.sweep_only:
        wanted = set(args.sweep_only)
        variants = [v for i, v in enumerate(variants) if str(i) in wanted]
    rows = []
    if partial is not None and partial.exists():
        rows = json.loads(partial.read_text())["rows"]
        log(f"resuming: {len(rows)} rows in {partial}")
    seen = {r["label"] for r in rows}
    for kind, label, overrides in variants:
        if label in seen:
            continue
        settings = {**base, **overrides}
        if kind == "one-shot":
            out = one_shot(model, tokenizer, chunks, evaluate, args, cloze=False, **settings)
        else:
            out = policy_gradient(model, tokenizer, chunks, evaluate, args, cloze=False, **settings)
        rows.append({"kind": kind, "label": label, "settings": settings, **out})
        if partial is not None:
            common.write_json(partial, {"sparsity": s, "rows": rows})
        log(f"sweep {label}: ppl {out['ppl']:.2f}" + (
            f" (init {out['init_ppl']:.2f})" if "init_ppl" in out else ""))  # fmt: skip
    return {"sparsity": s, "rows": rows}


# ---------------------------------------------------------------------- tables
def _cell(r: dict | None, pg: bool) -> tuple[str, str]:
    if r is None:
        return "-", "-"
    ppl = f"{r['ppl']:.1f}"
    if pg:
        ppl = f"{r['ppl']:.1f} ({r['ppl_min']:.1f}-{r['ppl_max']:.1f})"
    acc = r.get("cloze")
    if not acc:
        return ppl, "-"
    a = f"{acc['acc'] * 100:.1f}"
    if pg and r.get("cloze_min") is not None:
        a += f" ({r['cloze_min'] * 100:.1f}-{r['cloze_max'] * 100:.1f})"
    return ppl, a


def quality_report(results: dict, meta: dict) -> str:
    args = meta["args"]
    lines = [common.provenance_block(meta["machine"], meta["command"]), ""]
    dense = results["dense"]
    lines.append(
        f"Model: `{meta['model']}` ({dense['params'] / 1e6:.2f}M parameters). Sparsity = "
        "fraction of KV-head groups and of MLP channels removed. Perplexity: WikiText-2 test, "
        f"128-token protocol, first {meta['ppl_chunks']} of {meta['total_chunks']} chunks"
        + (" (the full test set)" if meta["ppl_chunks"] == meta["total_chunks"] else "")
        + f"; accuracy: hff_cloze (4 choices, chance 25%), first {args['cloze_limit']} items, "
        f"percent. Calibration: bundled calibration text, {args['init_samples']} chunks of "
        f"{args['seq_len']} tokens for the activation statistics. PG: {args['steps']} steps, "
        f"batch {args['batch_size']}, K {args['num_samples']}, lr {args['lr']}, "
        f"{args['estimator']} estimator, Wanda-sp init; median of seeds {args['seeds']} "
        "with (min-max). Dense: "
        f"perplexity {dense['ppl']:.2f}"
        + (f", accuracy {dense['cloze']['acc'] * 100:.1f}" if dense.get("cloze") else "")
        + "."
    )
    for budget in args["budgets"]:
        header = ["method"]
        for s in args["sparsities"]:
            header += [f"{round(s * 100)}% ppl", f"{round(s * 100)}% acc"]
        rows = []
        for method in [m for m in args["methods"] if m != "dense"]:
            row = [LABELS[method]]
            for s in args["sparsities"]:
                row += list(_cell(results.get(f"{budget}/{s}/{method}"), method == "pg"))
            rows.append(row)
        if "pg" in args["methods"]:
            row = ["PG's own init (median)"]
            for s in args["sparsities"]:
                r = results.get(f"{budget}/{s}/pg")
                row += [f"{r['init_ppl']:.1f}" if r else "-", ""]
            rows.append(row)
        lines += ["", f"**{budget} budget**", "", common.markdown_table(header, rows)]
    # the target: PG at the largest sparsity vs 0.9 x the best baseline
    s = max(args["sparsities"])
    for budget in args["budgets"]:
        pg = results.get(f"{budget}/{s}/pg")
        base = [
            (results[f"{budget}/{s}/{m}"]["ppl"], m)
            for m in BASELINES
            if f"{budget}/{s}/{m}" in results
        ]
        if pg and base:
            best, name = min(base)
            met = pg["ppl"] <= 0.9 * best
            lines.append(
                f"\nTarget at {round(s * 100)}%, {budget} budget: PG {pg['ppl']:.2f} vs 0.9 x best "
                f"baseline ({LABELS[name]} {best:.2f}) = {0.9 * best:.2f}: "
                f"**{'met' if met else 'not met'}** (PG/best = {pg['ppl'] / best:.3f})."
            )
    return "\n".join(lines)


def sweep_report(results: dict, meta: dict) -> str:
    args = meta["args"]
    rows = []
    for r in results["rows"]:
        rows.append(
            [
                r["label"],
                f"{r['init_ppl']:.2f}" if "init_ppl" in r else "-",
                f"**{r['ppl']:.2f}**",
                f"{r['ppl'] / r['init_ppl']:.3f}" if "init_ppl" in r else "-",
                f"{r['prune_cpu_s']:.0f}",
            ]
        )
    return "\n".join(
        [
            common.provenance_block(meta["machine"], meta["command"]),
            "",
            f"Model `{meta['model']}`, {round(results['sparsity'] * 100)}% sparsity, global "
            f"budget unless stated, seed 0, batch {args['batch_size']} x {args['seq_len']} "
            f"tokens. Perplexity: WikiText-2 test, first {meta['ppl_chunks']} of "
            f"{meta['total_chunks']} 128-token chunks. Each PG row changes one setting of the "
            "default row.",
            "",
            common.markdown_table(
                ["setting", "init ppl", "ppl", "ppl / init", "prune CPU s"], rows
            ),
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(p)
    p.add_argument("--methods", nargs="+", default=["dense", *BASELINES, "pg"],
                   choices=["dense", *BASELINES, "pg"])  # fmt: skip
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    p.add_argument("--budgets", nargs="+", default=["global", "layer"], choices=["global", "layer"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=200, help="PG steps")
    p.add_argument("--pg-sparsities", type=float, nargs="+", default=None,
                   help="run PG only at these sparsities (default: all)")  # fmt: skip
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--num-samples", type=int, default=2, help="PG's K")
    p.add_argument("--estimator", default="sqrt", choices=["sqrt", "reinforce"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--init-samples", type=int, default=128,
                   help="calibration chunks for the activation statistics")  # fmt: skip
    p.add_argument("--ppl-chunks", type=int, default=None,
                   help="evaluate the first N WikiText-2 test chunks (default: all)")  # fmt: skip
    p.add_argument("--cloze-limit", type=int, default=300, help="hff_cloze items (0: skip)")
    p.add_argument("--sweep", action="store_true", help="PG settings sweep instead of the table")
    p.add_argument("--sweep-sparsity", type=float, default=0.5)
    p.add_argument("--sweep-only", nargs="+", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.quick:
        if args.model == "reference":
            args.model = "random:tiny"
        args.sparsities, args.seeds, args.steps = [0.5], [0, 1], 3
        args.batch_size, args.seq_len, args.init_samples = 2, 32, 4
        args.ppl_chunks, args.cloze_limit, args.quiet = 4, 4, True
        args.sweep_only = args.sweep_only or ["0", "1", "5"]
    if args.device == "cpu":
        torch.set_num_threads(1)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    info = common.machine_info(args.device)
    command = common.command_line()
    model, tokenizer = common.load_model(args.model, device=args.device, dtype=args.dtype)
    if tokenizer is None:
        raise ValueError(f"--model {args.model}: the quality benchmark needs a tokenizer")
    evaluate = Evaluator(tokenizer, args)
    # one tokenization, one chunking: every method sees exactly these chunks
    probe = PolicyGradientPruner(model, tokenizer, PruningConfig(seq_len=args.seq_len))
    chunks = probe.prepare_data(calibration_text())
    before = fingerprint(model)
    start = time.process_time()
    if args.sweep:
        partial = (
            None
            if args.no_write or args.quick
            else common.RESULTS_DIR / "quality-sweep.partial.json"
        )
        results = sweep(model, tokenizer, chunks, evaluate, args, partial)
    else:
        partial = (
            None if args.no_write or args.quick else common.RESULTS_DIR / "quality.partial.json"
        )
        results = grid(model, tokenizer, chunks, evaluate, args, partial)
    if fingerprint(model) != before:
        raise RuntimeError("pruning changed the source model's weights")
    meta = {
        "model": args.model,
        "machine": info,
        "command": command,
        "args": {k: v for k, v in vars(args).items() if k not in ("output",)},
        "ppl_chunks": evaluate.ppl_chunks,
        "total_chunks": evaluate.total_chunks,
        "calibration_chunks": chunks.shape[0],
        "cpu_s": time.process_time() - start,
    }
    text = (sweep_report if args.sweep else quality_report)(results, meta)
    print(text)
    if args.no_write and args.output:
        common.write_json(args.output, {"meta": meta, "results": results})
    if not args.no_write:
        name = "quality-sweep.json" if args.sweep else "quality.json"
        common.write_json(
            args.output or common.RESULTS_DIR / name, {"meta": meta, "results": results}
        )
        if not args.quick:
            partial_name = "quality-sweep.partial.json" if args.sweep else "quality.partial.json"
            (common.RESULTS_DIR / partial_name).unlink(missing_ok=True)
        if not args.quick:
            heading = "## PG tuning sweep" if args.sweep else "## Pruning quality"
            common.update_section(heading, text)
    return {"meta": meta, "results": results}


if __name__ == "__main__":
    main()

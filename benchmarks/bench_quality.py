"""Pruning quality side by side: dense, random, magnitude, Wanda-sp, FLAP and
policy-gradient (PG) pruning at several sparsities, with global and per-layer budgets,
each with and without bias compensation.

The methods are ``hf-faithful prune --method`` (``PruningConfig.for_method``):
- global budget: Wanda-sp is our variant (dense statistics, per-layer sigmap, one
  ranking per pool); FLAP is FLAP's AL-AM (standardized fluctuation metric, one
  threshold over heads and channels weighed by parameter cost, so heads and channels
  lose different fractions and the parameter count differs a little from the others);
- layer budget: Wanda-sp as published (per layer, each layer measured with the ones
  before it pruned); FLAP's UL-UM (its metric, a uniform per-layer budget);
- ``+comp``: the same masks with bias compensation (a removed input of o_proj /
  down_proj replaced by its calibration mean, stored as biases); FLAP as published is
  ``FLAP +comp``; PG +comp samples the compensated network during the search.

Data (labelled in the report): calibration is the bundled text, the last 30% of
WikiText-2 valid in its tokenized (not raw) form, not C4 (PG, Wanda-sp) or WikiText-2
train (FLAP) as in the papers. Its last
``--dev-chunks`` 128-token chunks are held out as the dev split, on which ``--sweep``
chooses PG's settings; the test split is only reported. Every method sees exactly the
same ``--calib-chunks`` chunks: the one-shot statistics use all of them and PG draws its
batches from them (``--pg-data all`` lets PG draw from every calibration chunk instead;
the report says which). Models are evaluated physically compressed on
- WikiText-2 test perplexity with the paper's protocol (non-overlapping 128-token
  chunks; ``--ppl-chunks`` evaluates the first N chunks only, to save time), and
- accuracy on the bundled 4-choice cloze task ``hff_cloze`` (lm-eval, ``--cloze-limit``
  items).
PG starts from the Wanda-sp initialization and reports the median over ``--seeds`` with
the spread, and the perplexity of its own initialization for each seed.

``--sweep`` instead measures on the dev split, at one sparsity, what PG's settings buy
(steps, learning rate, K, estimator, budget, compensation, initialization, data).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_quality.py [--model reference]
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_quality.py --sweep
    python benchmarks/bench_quality.py --model path/to/SmolLM2-135M.gguf --device cuda

Writes benchmarks/results/quality[-TAG].json (quality-sweep[-TAG].json) and the "## Pruning
quality" ("## PG tuning sweep") section of benchmarks/RESULTS.md (with the model in the
heading for a model other than the bundled one).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
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
# the CLI method each benchmark method runs under a budget
METHOD_NAMES = {
    ("random", "global"): "random",
    ("random", "layer"): "random",
    ("magnitude", "global"): "magnitude",
    ("magnitude", "layer"): "magnitude",
    ("wanda_sp", "global"): "wanda-sp-global",
    ("wanda_sp", "layer"): "wanda-sp",
    ("flap", "global"): "flap",
    ("flap", "layer"): "flap",
    ("pg", "global"): "pg",
    ("pg", "layer"): "pg",
}
LABELS = {
    "dense": "dense",
    "random": "random",
    "magnitude": "magnitude",
    ("wanda_sp", "global"): "Wanda-sp (global; our variant)",
    ("wanda_sp", "layer"): "Wanda-sp (as published: per layer, sequential)",
    ("flap", "global"): "FLAP (AL-AM: cost-aware global allocation)",
    ("flap", "layer"): "FLAP (UL-UM: per layer)",
    "pg": "PG (Wanda-sp init)",
}
COMP = "+comp"
SHORT = {"wanda_sp": "Wanda-sp", "flap": "FLAP", "pg": "PG"}  # budget-free names


def label(method: str, budget: str) -> str:
    """Row label of ``method`` (``name`` or ``name+comp``) under ``budget``."""
    base, comp = method.removesuffix(COMP), method.endswith(COMP)
    text = LABELS.get((base, budget), LABELS.get(base, base))
    if comp:
        text += " +comp" + (" (as published)" if base == "flap" else "")
    return text


def variants(methods: list[str], compensate: str) -> list[str]:
    """The method keys to run: each method plain, compensated, or both."""
    out = []
    for m in methods:
        if m == "dense":
            out.append(m)
            continue
        if compensate in ("both", "off"):
            out.append(m)
        if compensate in ("both", "on"):
            out.append(m + COMP)
    return out


def fingerprint(model: torch.nn.Module) -> float:
    """Cheap checksum: pruning must leave the source model untouched."""
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


class Evaluator:
    """Test perplexity (reported) and dev perplexity (for choosing settings)."""

    def __init__(self, tokenizer, args, dev_chunks: torch.Tensor):
        self.tokenizer = tokenizer
        self.args = args
        self.test_ids = tokenize_text(tokenizer, wikitext2_test())
        total = self.test_ids.numel() // args.seq_len
        self.ppl_chunks = min(args.ppl_chunks or total, total)
        self.total_chunks = total
        self.dev_ids = dev_chunks.reshape(-1)

    def ppl(self, model) -> float:
        return perplexity(
            model,
            input_ids=self.test_ids,
            seq_len=self.args.seq_len,
            max_chunks=self.ppl_chunks,
            device=self.args.device,
            progress=False,
        )

    def dev_ppl(self, model) -> float:
        return perplexity(
            model,
            input_ids=self.dev_ids,
            seq_len=self.args.seq_len,
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


def make_pruner(model, tokenizer, args, *, method: str = "pg", **overrides) -> PolicyGradientPruner:
    """The pruner of ``method`` (a benchmark method key, ``+comp`` for compensation) with
    the benchmark's shared settings; ``overrides`` are explicit config fields."""
    base, comp = method.removesuffix(COMP), method.endswith(COMP)
    budget = overrides.get("budget", "global")
    values = dict(
        sparsity=0.5,
        budget=budget,
        target="both",
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        init_num_samples=args.init_samples,
        compensate=comp,
        logging_steps=10,
        seed=0,
    )
    if base == "pg":
        values.update(
            max_steps=args.steps,
            num_samples=args.num_samples,
            learning_rate=args.lr,
            estimator=args.estimator,
            init="wanda_sp",
            init_scale=args.init_scale,
        )
    values.update(overrides)
    name = METHOD_NAMES.get((base, values["budget"]), "pg")
    return PolicyGradientPruner(model, tokenizer, PruningConfig.for_method(name, **values))


def one_shot(
    model, tokenizer, chunks, evaluate, args, *, cloze=True, dev=False, **overrides
) -> dict:
    pruner = make_pruner(model, tokenizer, args, **overrides)
    wall, cpu = common.timed(lambda: pruner.initialize(chunks, progress=False))
    pruned = pruner.compress()
    out = {"dev_ppl": evaluate.dev_ppl(pruned)} if dev else evaluate(pruned, cloze=cloze)
    out.update(
        prune_cpu_s=cpu,
        prune_wall_s=wall,
        layer_sizes=pruner.layer_sizes(),
        params=common.count_params(pruned),
        method=pruner.provenance()["method"],
    )
    return out


def policy_gradient(
    model, tokenizer, chunks, evaluate, args, *, cloze=True, dev=False, **overrides
) -> dict:
    pruner = make_pruner(model, tokenizer, args, **overrides)
    score = evaluate.dev_ppl if dev else evaluate.ppl
    pruner.initialize(chunks, progress=False)
    init_ppl = score(pruner.compress())
    wall, cpu = common.timed(lambda: pruner.fit(chunks, progress=not args.quiet))
    pruned = pruner.compress()
    out = {"dev_ppl": score(pruned)} if dev else evaluate(pruned, cloze=cloze)
    losses = [h["loss"] for h in pruner.history if "loss" in h]
    out.update(
        init_ppl=init_ppl,
        steps=pruner.step,
        prune_cpu_s=cpu,
        prune_wall_s=wall,
        layer_sizes=pruner.layer_sizes(),
        params=common.count_params(pruned),
        method=pruner.provenance()["method"],
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


def grid(model, tokenizer, chunks, pg_chunks, evaluate, args, partial: Path | None = None) -> dict:
    """Every method x budget x sparsity (x compensation); with ``partial``, each result
    is saved as soon as it exists and a rerun skips what is already there (resumable).
    ``chunks`` feed the one-shot statistics, ``pg_chunks`` PG's batches."""
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
            for method in variants(args.methods, args.compensate):
                if method == "dense" or f"{key}/{method}" in results:
                    continue
                if f"{budget}/{method}" in args.skip:
                    continue
                if method.startswith("pg"):
                    if args.pg_sparsities and sparsity not in args.pg_sparsities:
                        continue
                    runs = []
                    for seed in args.seeds:
                        runs.append(
                            policy_gradient(
                                model,
                                tokenizer,
                                pg_chunks,
                                evaluate,
                                args,
                                method=method,
                                sparsity=sparsity,
                                budget=budget,
                                seed=seed,
                            )  # fmt: skip
                        )
                        log(f"{key} {method} seed {seed}: ppl {runs[-1]['ppl']:.2f} "
                            f"(init {runs[-1]['init_ppl']:.2f})")  # fmt: skip
                    done(f"{key}/{method}", summarize_seeds(runs))
                else:
                    done(
                        f"{key}/{method}",
                        one_shot(
                            model,
                            tokenizer,
                            chunks,
                            evaluate,
                            args,
                            method=method,
                            sparsity=sparsity,
                            budget=budget,
                        ),  # fmt: skip
                    )
                    log(f"{key} {method}: ppl {results[f'{key}/{method}']['ppl']:.2f}")
    return results


def sweep(
    model, tokenizer, chunks, pg_chunks, all_chunks, evaluate, args, partial: Path | None = None
) -> dict:
    """PG settings at one sparsity (global budget unless varied), seed 0, perplexity on
    the dev split only: this is where settings are chosen, so the test split stays unseen.

    Rows run in order of interest and, with ``partial``, are saved as they finish (a
    rerun skips the rows already there)."""
    s = args.sweep_sparsity
    base = {"sparsity": s, "budget": "global"}
    variants: list[tuple[str, str, dict]] = [
        ("one-shot", "Wanda-sp init only", {"method": "wanda_sp"}),
        ("pg", f"PG ({args.steps} steps, lr {args.lr:g}, K {args.num_samples}, "
               f"{args.estimator})", {"method": "pg"}),
        ("pg", "PG +comp (compensated search)", {"method": "pg" + COMP}),
        ("one-shot", "Wanda-sp init only +comp", {"method": "wanda_sp" + COMP}),
        ("one-shot", "FLAP +comp (as published)", {"method": "flap" + COMP}),
        ("pg", f"lr {args.lr * 10:g}", {"method": "pg", "learning_rate": args.lr * 10}),
        ("pg", "reinforce estimator", {"method": "pg", "estimator": "reinforce"}),
        ("pg", f"{args.steps * 3} steps", {"method": "pg", "max_steps": args.steps * 3}),
        ("pg", "K = 4", {"method": "pg", "num_samples": 4}),
        ("pg", f"lr {args.lr * 4:g}", {"method": "pg", "learning_rate": args.lr * 4}),
        ("pg", f"lr {args.lr / 2:g}", {"method": "pg", "learning_rate": args.lr / 2}),
        ("pg", "per-layer budget", {"method": "pg", "budget": "layer"}),
        ("pg", "Adam lr 2e-3 (released code's optimizer)",
         {"method": "pg", "optimizer": "adam", "learning_rate": 2e-3, "weight_decay": 1e-4}),
        ("pg", "PG drawing batches from every calibration chunk", {"method": "pg", "data": "all"}),
        ("one-shot", "magnitude init only", {"method": "magnitude"}),
        ("pg", "PG from the magnitude init", {"method": "pg", "init": "magnitude"}),
        # the compensated search (the CLI default of --method pg): its own settings
        ("pg", f"+comp {args.steps * 3} steps", {"method": "pg" + COMP, "max_steps": args.steps * 3}),
        ("pg", f"+comp {args.steps * 10} steps", {"method": "pg" + COMP, "max_steps": args.steps * 10}),
        ("pg", f"+comp lr {args.lr / 5:g}", {"method": "pg" + COMP, "learning_rate": args.lr / 5}),
        ("pg", f"+comp lr {args.lr * 4:g}", {"method": "pg" + COMP, "learning_rate": args.lr * 4}),
        ("pg", "+comp FLAP-metric init", {"method": "pg" + COMP, "init": "flap"}),
        ("pg", "+comp init scale 3 (sharper sigmap)", {"method": "pg" + COMP, "init_scale": 3.0}),
        ("pg", f"+comp init scale 3, {args.steps * 3} steps",
         {"method": "pg" + COMP, "init_scale": 3.0, "max_steps": args.steps * 3}),
        ("pg", "+comp K = 4", {"method": "pg" + COMP, "num_samples": 4}),
        ("pg", "+comp Adam lr 2e-3 (released code's optimizer)",
         {"method": "pg" + COMP, "optimizer": "adam", "learning_rate": 2e-3, "weight_decay": 1e-4}),
        ("pg", "+comp per-layer budget, sequential statistics (original code's init)",
         {"method": "pg" + COMP, "budget": "layer", "sequential_stats": True}),
        ("pg", "+comp batches from every calibration chunk", {"method": "pg" + COMP, "data": "all"}),
        # second round, around the best of the first (a sharper init, more steps)
        ("pg", f"+comp init scale 3, {args.steps * 3} steps, K = 4",
         {"method": "pg" + COMP, "init_scale": 3.0, "max_steps": args.steps * 3, "num_samples": 4}),
        ("pg", f"+comp init scale 3, {args.steps * 10} steps",
         {"method": "pg" + COMP, "init_scale": 3.0, "max_steps": args.steps * 10}),
        ("pg", f"+comp init scale 5, {args.steps * 3} steps",
         {"method": "pg" + COMP, "init_scale": 5.0, "max_steps": args.steps * 3}),
        ("pg", f"+comp init scale 10, {args.steps * 3} steps",
         {"method": "pg" + COMP, "init_scale": 10.0, "max_steps": args.steps * 3}),
        ("pg", f"+comp init scale 3, {args.steps * 3} steps, lr {args.lr * 2:g}",
         {"method": "pg" + COMP, "init_scale": 3.0, "max_steps": args.steps * 3,
          "learning_rate": args.lr * 2}),
        ("pg", f"+comp init scale 3, {args.steps * 3} steps, seed 1",
         {"method": "pg" + COMP, "init_scale": 3.0, "max_steps": args.steps * 3, "seed": 1}),
        ("pg", f"+comp init scale 3, {args.steps * 3} steps, seed 2",
         {"method": "pg" + COMP, "init_scale": 3.0, "max_steps": args.steps * 3, "seed": 2}),
    ]  # fmt: skip
    if args.sweep_only:
        wanted = set(args.sweep_only)
        variants = [v for i, v in enumerate(variants) if str(i) in wanted]
    rows = []
    if partial is not None and partial.exists():
        rows = json.loads(partial.read_text())["rows"]
        log(f"resuming: {len(rows)} rows in {partial}")
    seen = {r["label"] for r in rows}
    for kind, row_label, overrides in variants:
        if row_label in seen:
            continue
        settings = {**base, **overrides}
        data = all_chunks if settings.pop("data", None) == "all" else pg_chunks
        if kind == "one-shot":
            out = one_shot(model, tokenizer, chunks, evaluate, args, dev=True, **settings)
        else:
            out = policy_gradient(model, tokenizer, data, evaluate, args, dev=True, **settings)
        rows.append({"kind": kind, "label": row_label, "settings": settings, **out})
        if partial is not None:
            common.write_json(partial, {"sparsity": s, "rows": rows})
        log(f"sweep {row_label}: dev ppl {out['dev_ppl']:.2f}" + (
            f" (init {out['init_ppl']:.2f})" if "init_ppl" in out else ""))  # fmt: skip
    return {"sparsity": s, "rows": rows}


# ---------------------------------------------------------------------- tables
def _cell(r: dict | None, pg: bool) -> tuple[str, str]:
    if r is None:
        return "-", "-"
    ppl = f"{r['ppl']:.1f}"
    if pg and len(r.get("seeds", ())) == 1:
        ppl = f"{r['ppl']:.1f} (1 seed)"
    elif pg:
        ppl = f"{r['ppl']:.1f} ({r['ppl_min']:.1f}-{r['ppl_max']:.1f})"
    acc = r.get("cloze")
    if not acc:
        return ppl, "-"
    a = f"{acc['acc'] * 100:.1f}"
    if pg and r.get("cloze_min") is not None and len(r.get("seeds", ())) > 1:
        a += f" ({r['cloze_min'] * 100:.1f}-{r['cloze_max'] * 100:.1f})"
    return ppl, a


def data_note(meta: dict) -> str:
    """What the data were, and where they differ from the papers'."""
    args = meta["args"]
    pg_data = (
        "the same chunks"
        if args["pg_data"] == "same"
        else f"all {meta['all_calibration_chunks']} calibration chunks"
    )
    return (
        f"Calibration: {meta['calibration_chunks']} chunks of {args['seq_len']} tokens from "
        "the bundled text (last 30% of WikiText-2 valid, the tokenized WikiText-2 of "
        "PyTorch's word-language-model example, not wikitext-2-raw-v1; the papers calibrate "
        "on C4, FLAP on 1024 WikiText-2 train sequences); the one-shot statistics use all of them and PG draws its "
        f"{args['batch_size']}-sequence batches from {pg_data}. Dev split (settings chosen "
        f"there by `--sweep`): the last {meta['dev_chunks']} chunks of that text, held out "
        "from calibration. Test: WikiText-2 test (same tokenized form), the paper's protocol "
        f"in {args['seq_len']}-token chunks, first {meta['ppl_chunks']} of {meta['total_chunks']} chunks"
        + (" (the full test set)" if meta["ppl_chunks"] == meta["total_chunks"] else "")
        + "."
    )


def sparsity_within(
    dense: float, points: list[tuple[float, float]], factor: float = 1.5
) -> tuple[float, bool]:
    """The sparsity at which perplexity reaches ``factor`` x ``dense``, interpolated
    linearly in log-perplexity between measured ``(sparsity, ppl)`` points (dense at 0);
    the flag is False when even the largest measured sparsity stays below the bound
    (the value is then that sparsity, a lower bound)."""
    limit = math.log(factor * dense)
    prev_s, prev_l = 0.0, math.log(dense)
    for s, ppl in sorted(points):
        cur = math.log(ppl)
        if cur >= limit:
            frac = (limit - prev_l) / (cur - prev_l) if cur > prev_l else 0.0
            return prev_s + frac * (s - prev_s), True
        prev_s, prev_l = s, max(prev_l, cur)
    return prev_s, False


def within_table(results: dict, methods: list[str], args: dict, factor: float = 1.5) -> str:
    """Per method and budget: the sparsity it reaches within ``factor`` x dense."""
    dense = results["dense"]["ppl"]
    rows = []
    for method in methods:
        base = method.removesuffix(COMP)
        row = [SHORT.get(base, base) + (" +comp" if method.endswith(COMP) else "")]
        for budget in args["budgets"]:
            points = [
                (s, results[f"{budget}/{s}/{method}"]["ppl"])
                for s in args["sparsities"]
                if f"{budget}/{s}/{method}" in results
            ]
            if len(points) < 2:
                row.append("-")
                continue
            s, reached = sparsity_within(dense, points, factor)
            first = min(p[0] for p in points)
            if reached and s < first and first > min(args["sparsities"]):
                row.append(f"< {first:.0%}")  # not measured below its first sparsity
            else:
                row.append(f"{s:.0%}" if reached else f">= {s:.0%}")
        rows.append(row)
    return common.markdown_table(["method", *(f"{b} budget" for b in args["budgets"])], rows)


def _best(
    results: dict, methods: list[str], budgets: list[str], sparsity: float, *, pg: bool
) -> tuple[float, str, str] | None:
    """``(ppl, method, budget)`` of the lowest-perplexity PG (or one-shot) entry."""
    found = [
        (results[f"{b}/{sparsity}/{m}"]["ppl"], m, b)
        for b in budgets
        for m in methods
        if m.startswith("pg") == pg and f"{b}/{sparsity}/{m}" in results
    ]
    return min(found) if found else None


def quality_report(results: dict, meta: dict) -> str:
    args = meta["args"]
    lines = [common.provenance_block(meta["machine"], meta["command"]), ""]
    dense = results["dense"]
    lines.append(
        f"Model: `{meta['model']}` ({dense['params'] / 1e6:.2f}M parameters). Sparsity = "
        "fraction of KV-head groups and of MLP channels removed (FLAP's AL-AM removes that "
        "fraction of the prunable parameters instead, split adaptively between heads and "
        "channels). Accuracy: hff_cloze (4 choices, chance 25%), first "
        f"{args['cloze_limit']} items, percent. PG: {args['steps']} steps, batch "
        f"{args['batch_size']}, K {args['num_samples']}, lr {args['lr']}, {args['estimator']} "
        f"estimator, SGD, Wanda-sp init (sigmap scale {args.get('init_scale', 1.0):g}); median of seeds {args['seeds']} with (min-max). "
        "+comp: bias compensation (removed inputs replaced by their calibration means, "
        "stored as o_proj / down_proj biases). Dense: "
        f"perplexity {dense['ppl']:.2f}"
        + (f", accuracy {dense['cloze']['acc'] * 100:.1f}" if dense.get("cloze") else "")
        + "."
    )
    lines += ["", data_note(meta)]
    if meta.get("note"):  # how a hand-merged table was made
        lines += ["", f"Note: {meta['note']}."]
    methods = [m for m in variants(args["methods"], args["compensate"]) if m != "dense"]
    for budget in args["budgets"]:
        header = ["method"]
        for s in args["sparsities"]:
            header += [f"{round(s * 100)}% ppl", f"{round(s * 100)}% acc"]
        rows = []
        for method in methods:
            row = [label(method, budget)]
            for s in args["sparsities"]:
                row += list(_cell(results.get(f"{budget}/{s}/{method}"), method.startswith("pg")))
            if any(cell != "-" for cell in row[1:]):  # rows left out by --skip
                rows.append(row)
        for method in [m for m in methods if m.startswith("pg")]:
            row = [f"{label(method, budget)}: its own init (median)"]
            for s in args["sparsities"]:
                r = results.get(f"{budget}/{s}/{method}")
                row += [f"{r['init_ppl']:.1f}" if r else "-", ""]
            if any(cell not in ("-", "") for cell in row[1:]):
                rows.append(row)
        lines += ["", f"**{budget} budget**", "", common.markdown_table(header, rows)]
        params = []
        for s in args["sparsities"]:
            counts = {
                label(m, budget): results[f"{budget}/{s}/{m}"]["params"]
                for m in methods
                if f"{budget}/{s}/{m}" in results
            }
            # +comp's biases add 2 x hidden per layer: only allocation differences show
            if counts and max(counts.values()) > 1.005 * min(counts.values()):
                shown = ", ".join(f"{k} {v / 1e6:.3f}M" for k, v in counts.items())
                params.append(f"{round(s * 100)}%: {shown}")
        if params:
            lines += ["", "Parameters after pruning (they differ): " + "; ".join(params) + "."]
    lines += [
        "",
        f"**Sparsity within 1.5x dense perplexity** ({1.5 * dense['ppl']:.1f}), interpolated "
        "linearly in log-perplexity between the measured sparsities (dense at 0%); '>=' when "
        "the largest measured one stays within:",
        "",
        within_table(results, methods, args),
    ]
    # the targets: the best PG variant vs the best one-shot method, per sparsity PG ran at,
    # within each budget and (with two budgets) across them
    goals = {0.5: 0.90, 0.3: 0.95}
    for s in sorted(args["sparsities"], reverse=True):
        goal = goals.get(s, 0.9)
        scopes = [[b] for b in args["budgets"]]
        if len(args["budgets"]) > 1:
            scopes.append(list(args["budgets"]))
        for scope in scopes:
            pg = _best(results, methods, scope, s, pg=True)
            best = _best(results, methods, scope, s, pg=False)
            if pg is None or best is None:
                continue
            ratio, met = pg[0] / best[0], pg[0] <= goal * best[0]
            where = f"{scope[0]} budget" if len(scope) == 1 else "either budget"
            lines.append(
                f"\nTarget at {round(s * 100)}%, {where}: {label(pg[1], pg[2])} ({pg[2]}) "
                f"{pg[0]:.2f} vs {goal:g} x best one-shot ({label(best[1], best[2])}, "
                f"{best[2]}) {best[0]:.2f} = {goal * best[0]:.2f}: "
                f"**{'met' if met else 'not met'}** (PG/best = {ratio:.3f})."
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
                f"**{r['dev_ppl']:.2f}**",
                f"{r['dev_ppl'] / r['init_ppl']:.3f}" if "init_ppl" in r else "-",
                f"{r['prune_cpu_s']:.0f}",
            ]
        )
    pg_rows = [r for r in results["rows"] if r["kind"] == "pg"]
    best = min(pg_rows, key=lambda r: r["dev_ppl"]) if pg_rows else None
    return "\n".join(
        [
            common.provenance_block(meta["machine"], meta["command"]),
            "",
            f"Model `{meta['model']}`, {round(results['sparsity'] * 100)}% sparsity, global "
            f"budget unless stated, seed 0, batch {args['batch_size']} x {args['seq_len']} "
            "tokens. Perplexity on the dev split (not test): settings are chosen here. Each PG "
            "row names what it changes from the first PG row (+comp: the compensated search).",
            "",
            data_note(meta),
            "",
            common.markdown_table(
                ["setting", "init dev ppl", "dev ppl", "ppl / init", "prune CPU s"], rows
            ),
        ]
        + ([f"\nBest PG row on dev (one seed): {best['label']}."] if best else [])
    )


def rerender(path: Path, *, write: bool) -> dict:
    """The report of a finished results file, e.g. after the report's format changed."""
    data = json.loads(Path(path).read_text())
    meta, results = data["meta"], data["results"]
    meta["args"].setdefault("skip", [])
    sweep_run = bool(meta["args"].get("sweep"))
    text = (sweep_report if sweep_run else quality_report)(results, meta)
    print(text)
    if write:
        tag = common.model_tag(meta["model"])
        heading = "## PG tuning sweep" if sweep_run else "## Pruning quality"
        common.update_section(heading + (f" ({meta['model']})" if tag else ""), text)
    return data


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(p)
    p.add_argument("--methods", nargs="+", default=["dense", *BASELINES, "pg"],
                   choices=["dense", *BASELINES, "pg"])  # fmt: skip
    p.add_argument("--compensate", default="both", choices=["both", "on", "off"],
                   help="run each method without and with bias compensation (both), or one")  # fmt: skip
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    p.add_argument("--budgets", nargs="+", default=["global", "layer"], choices=["global", "layer"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=200, help="PG steps")
    p.add_argument("--pg-sparsities", type=float, nargs="+", default=None,
                   help="run PG only at these sparsities (default: all)")  # fmt: skip
    p.add_argument("--skip", nargs="+", default=[], metavar="BUDGET/METHOD",
                   help="leave out these rows, e.g. global/random layer/pg (saves time on "
                        "large models; the table shows '-')")  # fmt: skip
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--num-samples", type=int, default=2, help="PG's K")
    p.add_argument("--init-scale", type=float, default=1.0,
                   help="PG's sigmap init sharpness (PruningConfig.init_scale)")  # fmt: skip
    p.add_argument("--estimator", default="sqrt", choices=["sqrt", "reinforce"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--calib-chunks", type=int, default=128,
                   help="calibration chunks every method sees (a seeded sample; 0: all)")  # fmt: skip
    p.add_argument("--pg-data", default="same", choices=["same", "all"],
                   help="PG's batches from the same chunks as the statistics, or from all")  # fmt: skip
    p.add_argument("--dev-chunks", type=int, default=64,
                   help="last calibration chunks held out as the dev split")  # fmt: skip
    p.add_argument("--ppl-chunks", type=int, default=None,
                   help="evaluate the first N WikiText-2 test chunks (default: all)")  # fmt: skip
    p.add_argument("--cloze-limit", type=int, default=300, help="hff_cloze items (0: skip)")
    p.add_argument("--sweep", action="store_true", help="PG settings sweep instead of the table")
    p.add_argument("--sweep-sparsity", type=float, default=0.5)
    p.add_argument("--sweep-only", nargs="+", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--report-only", type=Path, default=None, metavar="JSON",
                   help="re-render the report of a results file (and its RESULTS.md section "
                        "unless --no-write) without measuring")  # fmt: skip
    args = p.parse_args(argv)
    if args.report_only is not None:
        return rerender(args.report_only, write=not args.no_write)
    if args.quick:
        if args.model == "reference":
            args.model = "random:tiny"
        args.sparsities, args.seeds, args.steps = [0.5], [0, 1], 3
        args.batch_size, args.seq_len, args.calib_chunks, args.dev_chunks = 2, 32, 4, 2
        args.ppl_chunks, args.cloze_limit, args.quiet = 4, 4, True
        args.sweep_only = args.sweep_only or ["0", "1", "2"]
    if args.device == "cpu":
        torch.set_num_threads(1)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    info = common.machine_info(args.device)
    command = common.command_line()
    model, tokenizer = common.load_model(args.model, device=args.device, dtype=args.dtype)
    if tokenizer is None:
        raise ValueError(f"--model {args.model}: the quality benchmark needs a tokenizer")
    # one tokenization, one chunking; the dev split is held out of calibration, and every
    # method sees exactly the same calibration chunks
    probe = PolicyGradientPruner(model, tokenizer, PruningConfig(seq_len=args.seq_len))
    chunks, dev_chunks, all_chunks = common.split_calibration(
        probe.prepare_data(calibration_text()), args.dev_chunks, args.calib_chunks
    )
    pg_chunks = chunks if args.pg_data == "same" else all_chunks
    args.init_samples = chunks.shape[0]  # the statistics use every chosen chunk
    evaluate = Evaluator(tokenizer, args, dev_chunks)
    before = fingerprint(model)
    start = time.process_time()
    tag = common.model_tag(args.model)
    suffix = f"-{tag}" if tag else ""
    if args.sweep:
        partial = (
            None
            if args.no_write or args.quick
            else common.RESULTS_DIR / f"quality-sweep{suffix}.partial.json"
        )
        results = sweep(model, tokenizer, chunks, pg_chunks, all_chunks, evaluate, args, partial)
    else:
        partial = (
            None
            if args.no_write or args.quick
            else common.RESULTS_DIR / f"quality{suffix}.partial.json"
        )
        results = grid(model, tokenizer, chunks, pg_chunks, evaluate, args, partial)
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
        "all_calibration_chunks": all_chunks.shape[0],
        "dev_chunks": dev_chunks.shape[0],
        "cpu_s": time.process_time() - start,
    }
    text = (sweep_report if args.sweep else quality_report)(results, meta)
    print(text)
    if args.no_write and args.output:
        common.write_json(args.output, {"meta": meta, "results": results})
    if not args.no_write:
        name = f"quality-sweep{suffix}.json" if args.sweep else f"quality{suffix}.json"
        common.write_json(
            args.output or common.RESULTS_DIR / name, {"meta": meta, "results": results}
        )
        if not args.quick:
            (common.RESULTS_DIR / f"{Path(name).stem}.partial.json").unlink(missing_ok=True)
            heading = "## PG tuning sweep" if args.sweep else "## Pruning quality"
            common.update_section(heading + (f" ({args.model})" if tag else ""), text)
    return {"meta": meta, "results": results}


if __name__ == "__main__":
    main()

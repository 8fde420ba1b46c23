"""`hf-faithful evaluate`: perplexity and lm-eval tasks for any causal LM."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_faithful.evaluation.harness import BUNDLED_TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="WikiText-2 perplexity and lm-eval tasks for a causal LM",
        description=(
            "Evaluate a causal LM (the bundled reference model by default): WikiText-2 test "
            "perplexity with the pruning paper's protocol, then lm-eval tasks (bundled "
            f"offline tasks: {', '.join(BUNDLED_TASKS)}; standard names need the Hub)."
        ),
    )
    p.add_argument("model", nargs="?", default=None, help="model folder or Hub id")
    p.add_argument("--tasks", default=",".join(BUNDLED_TASKS), help="comma-separated task names")
    p.add_argument("--limit", type=float, default=None, help="documents per task (or fraction)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128, help="perplexity chunk length")
    p.add_argument("--no-perplexity", action="store_true", help="skip WikiText-2 perplexity")
    p.add_argument(
        "--perplexity-chunks", type=int, default=None, help="only the first N chunks (quick look)"
    )
    p.add_argument("--include-path", default=None, help="extra folder of lm-eval task YAMLs")
    p.add_argument("--device", default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--output", type=Path, default=None, help="write results as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_faithful.evaluation.harness import evaluate_with_lm_eval, format_results, task_manager
    from hf_faithful.evaluation.perplexity import perplexity
    from hf_faithful.models import load_causal_lm

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.limit is not None:
        if args.limit <= 0:
            raise ValueError(f"--limit must be positive, got {args.limit:g}")
        args.limit = int(args.limit) if args.limit >= 1 else args.limit
    if tasks:
        task_manager(tasks, args.include_path)  # unknown task names fail before loading
    model, tokenizer = load_causal_lm(
        args.model, device=args.device, trust_remote_code=args.trust_remote_code
    )
    name = args.model or "hf-faithful reference model"
    results: dict[str, dict[str, float]] = {}
    if not args.no_perplexity:
        ppl = perplexity(
            model,
            tokenizer,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            max_chunks=args.perplexity_chunks,
        )
        results["wikitext2_test_ppl"] = {f"perplexity@{args.seq_len}": ppl}
        print(f"{name}: WikiText-2 test perplexity ({args.seq_len}-token chunks) = {ppl:.2f}")
    if tasks:
        results.update(
            evaluate_with_lm_eval(
                model,
                tokenizer,
                tasks,
                limit=args.limit,
                batch_size=args.batch_size,
                include_path=args.include_path,
            )
        )
    print(format_results(results))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_suffix(args.output.suffix + ".tmp")
        tmp.write_text(json.dumps({"model": name, "results": results}, indent=2) + "\n")
        tmp.replace(args.output)
    return 0

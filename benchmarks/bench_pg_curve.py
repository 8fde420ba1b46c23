"""PG's learning curve: the policy-gradient loss and held-out perplexity against steps.

One PG run (``hf-faithful prune --method pg``: bias compensation on, Wanda-sp init) at
``--sparsity`` with the global budget. The data are split exactly as in
``bench_quality.py``: the bundled calibration text (last 30% of WikiText-2 valid) in
``--seq-len``-token chunks, its last ``--dev-chunks`` chunks held out as the dev split,
and a seeded sample of ``--calib-chunks`` of the rest for the statistics and PG's
batches. The pruner records the loss (mean over the K sampled masks) and the baseline
every ``--logging-steps`` steps and the dev perplexity of the hard masks every
``--eval-steps`` steps; step 0 is the Wanda-sp initialization. The dense model, the
initialization and the final model are also measured on WikiText-2 test (first
``--ppl-chunks`` 128-token chunks, as the quality table).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_pg_curve.py [--model reference]

Writes benchmarks/results/pg-curve[-TAG].json, docs/images/pg_learning_curve[-TAG].png
and the "## PG learning curve" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import plots  # noqa: E402

from hf_faithful.corpora import calibration_text, wikitext2_test  # noqa: E402
from hf_faithful.evaluation.perplexity import perplexity, tokenize_text  # noqa: E402
from hf_faithful.evaluation.plots import save_figure  # noqa: E402
from hf_faithful.pruning import PolicyGradientPruner, PruningConfig  # noqa: E402

HEADING = "## PG learning curve"


def report(data: dict, image: str | None) -> str:
    meta, args = data["meta"], data["meta"]["args"]
    evals = [(0, data["init"]["dev_ppl"], None)] + [
        (h["step"], h["eval_perplexity"], None) for h in data["history"] if "eval_perplexity" in h
    ]
    losses = {h["step"]: h["loss"] for h in data["history"] if "loss" in h}
    rows = []
    for step, ppl, _ in evals:
        near = [s for s in losses if s <= step]
        loss = f"{losses[max(near)]:.3f}" if near else "-"
        rows.append([step, loss, f"{ppl:.2f}"])
    dense, init, final = data["dense"], data["init"], data["final"]
    lines = [
        common.provenance_block(meta["machine"], meta["command"]),
        "",
        f"Model: `{meta['model']}`. PG (`--method pg`: bias compensation "
        f"{'on' if meta['compensate'] else 'off'}, Wanda-sp init) at "
        f"{args['sparsity']:.0%} sparsity, {args['budget']} budget, {args['steps']} steps, "
        f"batch {args['batch_size']} x {args['seq_len']} tokens, K {args['num_samples']}, lr "
        f"{args['lr']:g} (cosine), seed {args['seed']}; {meta['pg_cpu_s']:.0f} s of CPU for "
        "the steps and the in-loop evaluations. Data as in the quality table: "
        f"{meta['calibration_chunks']} calibration chunks; dev = the last "
        f"{meta['dev_chunks']} chunks of the calibration text, held out. Loss: mean "
        "cross-entropy of the K sampled masks (the value at the last logged step at or "
        "before the evaluation); dev perplexity: hard masks (step 0: the Wanda-sp init).",
        "",
        common.markdown_table(["step", "loss", "dev ppl"], rows),
        "",
        f"Dense: dev {dense['dev_ppl']:.2f}, WikiText-2 test {dense['test_ppl']:.2f}. "
        f"Compressed models, WikiText-2 test (first {meta['ppl_chunks']} chunks): Wanda-sp "
        f"init {init['test_ppl']:.2f} -> PG {final['test_ppl']:.2f} (dev {init['dev_ppl']:.2f} "
        f"-> {final['dev_ppl']:.2f}).",
    ]
    if image:
        lines += ["", f"![PG learning curve]({image})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(p)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--budget", default="global", choices=["global", "layer"])
    p.add_argument("--steps", type=int, default=300, help="PG steps")
    p.add_argument("--eval-steps", type=int, default=25, help="dev perplexity every N steps")
    p.add_argument("--logging-steps", type=int, default=5, help="loss every N steps")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--num-samples", type=int, default=2, help="PG's K")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--calib-chunks", type=int, default=128,
                   help="calibration chunks (a seeded sample; 0: all)")  # fmt: skip
    p.add_argument("--dev-chunks", type=int, default=64,
                   help="last calibration chunks held out as the dev split")  # fmt: skip
    p.add_argument("--ppl-chunks", type=int, default=128,
                   help="WikiText-2 test chunks for the dense / init / final models (0: all)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image", type=Path, default=None,
                   help="PNG of the curve (default docs/images/pg_learning_curve[-TAG].png)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.quick:
        if args.model == "reference":
            args.model = "random:tiny"
        args.steps, args.eval_steps, args.logging_steps = 4, 2, 1
        args.batch_size, args.seq_len, args.calib_chunks, args.dev_chunks = 2, 32, 4, 2
        args.ppl_chunks, args.quiet = 2, True
    if args.device == "cpu":
        torch.set_num_threads(1)
    info = common.machine_info(args.device)
    command = common.command_line()
    model, tokenizer = common.load_model(args.model, device=args.device, dtype=args.dtype)
    if tokenizer is None:
        raise ValueError(f"--model {args.model}: the learning curve needs a tokenizer")
    probe = PolicyGradientPruner(model, tokenizer, PruningConfig(seq_len=args.seq_len))
    chunks, dev, _ = common.split_calibration(
        probe.prepare_data(calibration_text()), args.dev_chunks, args.calib_chunks
    )
    config = PruningConfig.for_method(
        "pg",
        sparsity=args.sparsity,
        budget=args.budget,
        max_steps=args.steps,
        eval_steps=args.eval_steps,
        logging_steps=args.logging_steps,
        learning_rate=args.lr,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        init_num_samples=chunks.shape[0],  # the statistics use every chosen chunk
        seed=args.seed,
    )
    pruner = PolicyGradientPruner(model, tokenizer, config)
    dev_ids = dev.reshape(-1)
    test_ids = tokenize_text(tokenizer, wikitext2_test())

    def measure(m) -> dict:
        kw = dict(seq_len=args.seq_len, device=args.device, progress=False)
        return {
            "dev_ppl": perplexity(m, input_ids=dev_ids, **kw),
            "test_ppl": perplexity(m, input_ids=test_ids, max_chunks=args.ppl_chunks or None, **kw),
            "params": common.count_params(m),
        }

    start = time.process_time()
    dense = measure(model)
    pruner.initialize(chunks, progress=False)
    init = measure(pruner.compress())
    wall, cpu = common.timed(
        lambda: pruner.fit(chunks, eval_data=dev_ids, progress=not args.quiet), args.device
    )
    final = measure(pruner.compress())
    total_chunks = test_ids.numel() // args.seq_len
    meta = {
        "model": args.model,
        "machine": info,
        "command": command,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "compensate": pruner.config.compensate,
        "method": pruner.provenance()["method"],
        "calibration_chunks": chunks.shape[0],
        "dev_chunks": dev.shape[0],
        "ppl_chunks": min(args.ppl_chunks or total_chunks, total_chunks),
        "total_chunks": total_chunks,
        "pg_wall_s": wall,
        "pg_cpu_s": cpu,
        "cpu_s": time.process_time() - start,
    }
    data = {
        "meta": meta,
        "dense": dense,
        "init": init,
        "final": final,
        "history": list(pruner.history),
    }
    tag = common.model_tag(args.model)
    suffix = f"-{tag}" if tag else ""
    writing = not (args.no_write or args.quick)
    if args.output and not writing:
        common.write_json(args.output, data)
    if writing:  # the measurements first: a drawing error must not lose them
        common.write_json(args.output or common.RESULTS_DIR / f"pg-curve{suffix}.json", data)
    image = args.image
    if image is None and writing:
        image = plots.IMAGES_DIR / f"pg_learning_curve{suffix}.png"
    if image is not None:
        save_figure(plots.pg_curve_figure(data), image)
    try:
        shown = Path(image).resolve().relative_to(common.BENCH_DIR.parent) if image else None
    except ValueError:
        shown = None
    text = report(data, f"../{shown.as_posix()}" if shown else None)
    print(text)
    if writing:
        common.update_section(HEADING + (f" ({args.model})" if tag else ""), text)
    return data


if __name__ == "__main__":
    main()

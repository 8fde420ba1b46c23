"""What users get: forward latency and generation speed of the compressed model vs dense.

The pruned models are real ``PrunedLlamaForCausalLM`` objects (weights sliced, per-layer
sizes) at each sparsity, made one-shot from the weight-magnitude metric with the
default global budget (which units go does not matter for speed, only how many per
layer; magnitude needs no data, so this works on any ``--model``). Dense and pruned
runs are interleaved; each figure is the median over repetitions. The ideal ratio is
the pruned/dense ratio of matmul parameters (every Linear, lm_head included: the
per-token multiply-adds) and of all parameters.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_speed.py [--model reference]
    python benchmarks/bench_speed.py --device cuda --model random:1b --dtype bfloat16

``--sparsities 0.1 0.2 0.3 0.5 0.7`` times more pruned models (one ``"<percent>% pruned"``
entry each).

Writes benchmarks/results/speed[-<device>][-<model>].json, the "## Pruned model speed"
section of benchmarks/RESULTS.md (the "## GPU: pruned model speed" section on CUDA), and
redraws docs/images/latency_vs_sparsity[-cuda].png from every speed results file of the
device (``benchmarks/plots.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import plots  # noqa: E402

from hf_faithful.evaluation.plots import save_figure  # noqa: E402
from hf_faithful.pruning import PolicyGradientPruner, PruningConfig  # noqa: E402


def compressed(model, sparsity: float, budget: str):
    config = PruningConfig(sparsity=sparsity, budget=budget, init="magnitude", max_steps=0)
    pruner = PolicyGradientPruner(model, None, config)
    pruner.initialize(progress=False)
    return pruner.compress().eval(), pruner.layer_sizes()


def measure(models: dict, args) -> dict:
    """Median forward latency (per batch shape) and generation tokens/s per model."""
    vocab = next(iter(models.values())).get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    shapes = [tuple(s) for s in args.shapes]
    inputs = {s: torch.randint(0, vocab, s, generator=gen).to(args.device) for s in shapes}
    prompt = torch.randint(0, vocab, (1, args.prompt_len), generator=gen).to(args.device)
    col = 0 if args.device.startswith("cuda") else 1
    times = {name: {**{s: [] for s in shapes}, "generate": []} for name in models}

    @torch.no_grad()
    def forward(model, x):
        model(input_ids=x, use_cache=False)

    @torch.no_grad()
    def generate(model):
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        assert out.shape[1] == args.prompt_len + args.new_tokens

    for rep in range(args.repeats + 1):  # rep 0 warms up
        for name, model in models.items():
            for s in shapes:
                t = common.timed(lambda m=model, x=inputs[s]: forward(m, x), args.device)
                if rep:
                    times[name][s].append(t[col])
            t = common.timed(lambda m=model: generate(m), args.device)
            if rep:
                times[name]["generate"].append(t[col])
    out = {}
    for name in models:
        out[name] = {
            "forward_s": {"x".join(map(str, s)): common.median(times[name][s]) for s in shapes},
            "generate_tokens_per_s": args.new_tokens / common.median(times[name]["generate"]),
        }
    return out


def report(results: dict, info: dict, command: str) -> str:
    shapes = list(results["timings"]["dense"]["forward_s"])
    header = ["model", "params", "ideal (matmul / all params)"]
    header += [f"forward {s} (s)" for s in shapes] + ["generate tok/s", "latency ratio"]
    rows = []
    dense = results["timings"]["dense"]
    for name, t in results["timings"].items():
        p = results["params"][name]
        ratios = [t["forward_s"][s] / dense["forward_s"][s] for s in shapes]
        rows.append(
            [
                name,
                f"{p['all'] / 1e6:.2f}M",
                "1.00 / 1.00"
                if name == "dense"
                else f"{p['matmul'] / results['params']['dense']['matmul']:.2f} / "
                f"{p['all'] / results['params']['dense']['all']:.2f}",
                *(f"{t['forward_s'][s]:.4f}" for s in shapes),
                f"{t['generate_tokens_per_s']:.1f} ({t['generate_tokens_per_s'] / dense['generate_tokens_per_s']:.2f}x)",
                " / ".join(f"{r:.2f}" for r in ratios),
            ]
        )
    clock = "process CPU time" if results["clock"] == "process_cpu" else "wall time"
    sizes = "; ".join(
        f"{name}: KV heads {s['num_key_value_heads']}, MLP {s['intermediate_size']}"
        for name, s in results["layer_sizes"].items()
    )
    return "\n".join(
        [
            common.provenance_block(info, command),
            "",
            f"Model: `{results['model']}`, {results['dtype']}, {clock}, median of "
            f"{results['repeats']} repetitions; generation: greedy, batch 1, prompt "
            f"{results['prompt_len']} tokens, {results['new_tokens']} new tokens with the KV "
            "cache. Latency ratio = pruned / dense forward time per shape (target at 50%: "
            "<= 0.65).",
            "",
            common.markdown_table(header, rows),
            "",
            f"Per-layer sizes (global budget): {sizes}.",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(p)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5],
                   help="pruned models to time, e.g. 0.1 0.2 0.3 0.5 0.7")  # fmt: skip
    p.add_argument("--budget", default="global", choices=["global", "layer"])
    p.add_argument(
        "--shapes", type=int, nargs=2, action="append", default=None,
        help="forward batch shape B L (repeatable; default 1 128 and 8 128)",
    )  # fmt: skip
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--image", type=Path, default=None,
                   help="PNG of this run's latency against sparsity (by default, when "
                        "writing, docs/images/latency_vs_sparsity[-cuda].png is redrawn from "
                        "every speed results file of the device)")  # fmt: skip
    args = p.parse_args(argv)
    args.shapes = args.shapes or [[1, 128], [8, 128]]
    if args.quick:
        if args.model == "reference":
            args.model = "random:tiny"
        args.shapes, args.prompt_len, args.new_tokens, args.repeats = [[2, 16]], 4, 8, 1
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    info = common.machine_info(args.device)
    command = common.command_line()
    dense, _ = common.load_model(args.model, device=args.device, dtype=args.dtype)
    models = {"dense": dense}
    layer_sizes = {}
    for s in args.sparsities:
        name = f"{round(s * 100)}% pruned"
        models[name], layer_sizes[name] = compressed(dense, s, args.budget)
    params = {
        n: {"all": common.count_params(m), "matmul": common.matmul_params(m)}
        for n, m in models.items()
    }
    results = {
        "model": args.model,
        "dtype": args.dtype,
        "machine": info,
        "command": command,
        "budget": args.budget,
        "repeats": args.repeats,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "clock": "wall" if args.device.startswith("cuda") else "process_cpu",
        "params": params,
        "layer_sizes": layer_sizes,
        "timings": measure(models, args),
    }
    text = report(results, info, command)
    print(json.dumps(results["timings"], indent=1))
    print(text)
    if args.no_write and args.output:
        common.write_json(args.output, results)
    if not args.no_write:
        tag = common.model_tag(args.model)
        suffix = "" if args.device == "cpu" else f"-{args.device.split(':')[0]}"
        suffix += f"-{tag}" if tag else ""
        common.write_json(args.output or common.RESULTS_DIR / f"speed{suffix}.json", results)
        if not args.quick:
            heading = (
                "## Pruned model speed" if args.device == "cpu" else "## GPU: pruned model speed"
            )
            device = "cuda" if args.device.startswith("cuda") else "cpu"
            drawn = plots.draw_latency(common.RESULTS_DIR, plots.IMAGES_DIR, device)
            print(f"wrote {drawn}")
            text += f"\n\n![Latency against sparsity](../docs/images/{drawn.name})"
            common.update_section(heading + (f" ({args.model})" if tag else ""), text)
    if args.image is not None:
        device = "cuda" if args.device.startswith("cuda") else "cpu"
        save_figure(plots.latency_figure({args.model: results}, device), args.image)
    return results


if __name__ == "__main__":
    main()

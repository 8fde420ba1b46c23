"""What policy-gradient pruning costs: time per step, peak memory, memory over a long run,
and how step time grows with model size and sequence length.

- Step time: one ``PolicyGradientPruner`` step (K masked forward passes + losses +
  score update + projection) over K plain forward passes of the same model on the
  same batch (the limit is 1.0; target <= 1.15). Rounds interleave the two so both
  see the same neighbours; the ratio is the median over rounds of process CPU time
  (one thread), wall time is shown too.
- Peak memory, each in a fresh subprocess: forward-only inference, one backward pass
  (what gradient-based pruners such as LLM-Pruner need), and PG pruning, on the same
  batch. On CPU the peak is Linux's resident high-water mark (VmHWM, reset through
  ``/proc/self/clear_refs`` once the model is loaded) minus the resident size after
  the imports, i.e. weights + everything the operation allocates, without the
  interpreter and libraries; on CUDA it is ``torch.cuda.max_memory_allocated``.
- Long run: resident memory sampled during thousands of PG steps (a fresh
  subprocess, small batch): it must stay flat.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_cost.py [--model reference]
    python benchmarks/bench_cost.py --device cuda --model random:1b --sizes ref 60m 1b

Writes benchmarks/results/cost[-<device>].json and the "## Pruning cost" section of
benchmarks/RESULTS.md (the "## GPU" section when ``--device cuda``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from hf_faithful.pruning import PolicyGradientPruner, PruningConfig  # noqa: E402


def make_pruner(model, batch: torch.Tensor, k: int, steps: int) -> PolicyGradientPruner:
    """A pruner whose every step sees ``batch`` (the calibration data is that one batch)."""
    config = PruningConfig(
        sparsity=0.5,
        init="constant",
        max_steps=steps,
        batch_size=batch.shape[0],
        seq_len=batch.shape[1],
        num_samples=k,
        logging_steps=0,
    )
    pruner = PolicyGradientPruner(model, None, config)
    pruner.initialize(batch, progress=False)
    return pruner


def random_batch(model, batch_size: int, seq_len: int, device: str) -> torch.Tensor:
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (batch_size, seq_len), generator=gen).to(device)


def step_ratio(model, batch, *, k: int, steps: int, rounds: int, device: str) -> dict:
    """Median over rounds of (PG step time) / (K plain forwards time) on ``batch``."""
    pruner = make_pruner(model, batch.cpu(), k, 0)
    labels = batch.clone()

    @torch.no_grad()
    def forwards():
        for _ in range(k * steps):
            model(input_ids=batch, use_cache=False)

    @torch.no_grad()
    def forwards_with_loss():
        for _ in range(k * steps):
            model(input_ids=batch, labels=labels, use_cache=False)

    def pg_steps():
        pruner.config.max_steps += steps
        pruner.fit(batch.cpu(), progress=False)

    rows = {"forward": [], "forward_loss": [], "pg": []}
    for r in range(rounds + 1):  # round 0 warms up and is dropped
        times = {
            "forward": common.timed(forwards, device),
            "forward_loss": common.timed(forwards_with_loss, device),
            "pg": common.timed(pg_steps, device),
        }
        if r:
            for key, value in times.items():
                rows[key].append(value)
    col = 0 if device.startswith("cuda") else 1  # CPU: process time; CUDA: wall time
    out = {
        "k": k,
        "batch": list(batch.shape),
        "steps_per_round": steps,
        "rounds": rounds,
        "clock": "wall" if col == 0 else "process_cpu",
    }
    for key, values in rows.items():
        per = [v[col] / (steps if key == "pg" else steps * k) for v in values]
        out[f"{key}_s"] = common.median(per)
        out[f"{key}_wall_s"] = common.median(
            [v[0] / (steps if key == "pg" else steps * k) for v in values]
        )
    ratios = [p[col] / f[col] for p, f in zip(rows["pg"], rows["forward"])]
    ratios_loss = [p[col] / f[col] for p, f in zip(rows["pg"], rows["forward_loss"])]
    out["ratio"] = common.median(ratios)
    out["ratio_spread"] = [min(ratios), max(ratios)]
    out["ratio_vs_forward_with_loss"] = common.median(ratios_loss)
    return out


# ------------------------------------------------------------ memory probes
def probe(mode: str, args) -> dict:
    """Runs in a fresh subprocess: peak memory of one operation on one batch."""
    device = args.device
    torch.set_num_threads(1)
    base = common.current_mb(device)
    model, _ = common.load_model(args.model, device=device, dtype=args.dtype)
    batch = random_batch(model, args.batch, args.seq_len, device)
    pruner = make_pruner(model, batch.cpu(), args.num_samples, 0) if mode == "pg" else None
    loaded = common.current_mb(device)
    common.reset_peak(device)
    if mode == "forward":
        with torch.no_grad():
            for _ in range(args.num_samples):
                model(input_ids=batch, use_cache=False)
    elif mode == "backward":
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
    elif mode == "pg":
        pruner.config.max_steps = 3
        pruner.fit(batch.cpu(), progress=False)
    else:
        raise ValueError(f"unknown probe mode {mode!r}")
    common.sync(device)
    peak = common.peak_mb(device)
    return {"mode": mode, "base_mb": base, "loaded_mb": loaded, "peak_mb": peak}


def _child(args, *extra: str) -> dict:
    """Run this script in a fresh Python process with the resolved settings."""
    cmd = [sys.executable, __file__, *extra]
    for flag in ("model", "device", "dtype", "batch", "seq_len", "num_samples", "long_steps",
                 "long_batch", "long_seq_len"):  # fmt: skip
        cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{' '.join(extra)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_probe(mode: str, args) -> dict:
    if args.in_process:
        return probe(mode, args)
    return _child(args, "--_probe", mode)


def memory(args) -> dict:
    probes = {mode: run_probe(mode, args) for mode in ("forward", "backward", "pg")}
    # model + working memory: peak minus what the process held before the model existed
    used = {m: p["peak_mb"] - p["base_mb"] for m, p in probes.items()}

    def ratio(a: str, b: str) -> float:
        return used[a] / used[b] if used[b] > 0 else float("nan")

    return {
        "probes": probes,
        "used_mb": used,
        "pg_over_forward": ratio("pg", "forward"),
        "pg_over_backward": ratio("pg", "backward"),
        "backward_over_forward": ratio("backward", "forward"),
    }


def long_run(args) -> dict:
    """Runs in a fresh subprocess: RSS sampled while ``fit`` runs ``--long-steps`` steps."""
    torch.set_num_threads(1)
    model, _ = common.load_model(args.model, device=args.device, dtype=args.dtype)
    data = random_batch(model, 64, args.long_seq_len, args.device).cpu()
    config = PruningConfig(
        sparsity=0.5,
        init="constant",
        max_steps=args.long_steps,
        batch_size=args.long_batch,
        seq_len=args.long_seq_len,
        num_samples=args.num_samples,
        logging_steps=10,
    )
    pruner = PolicyGradientPruner(model, None, config)
    pruner.initialize(data, progress=False)
    samples: list[tuple[int, float]] = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples.append((pruner.step, common.current_mb(args.device)))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    pruner.fit(data, progress=False)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    samples.append((pruner.step, common.current_mb(args.device)))
    marks = [round(args.long_steps * i / 10) for i in range(11)]
    at = {}
    for mark in marks:
        after = [mb for step, mb in samples if step >= mark]
        at[mark] = after[0] if after else samples[-1][1]
    return {
        "steps": args.long_steps,
        "batch": [args.long_batch, args.long_seq_len],
        "seconds": seconds,
        "rss_mb_at_step": at,
        "max_rss_mb": max(mb for _, mb in samples),
        "growth_mb_10_to_100_pct": at[marks[-1]] - at[marks[1]],
    }


def run_long(args) -> dict:
    if args.in_process:
        return long_run(args)
    return _child(args, "--_long")


# -------------------------------------------------------------- scaling
def scaling(args) -> dict:
    out = {"model_size": [], "seq_len": []}
    for preset in args.sizes:
        model, _ = common.random_model(preset, dtype=getattr(torch, args.dtype), device=args.device)
        batch = random_batch(model, args.batch, args.seq_len, args.device)
        r = step_ratio(
            model, batch, k=args.num_samples, steps=1, rounds=args.scale_rounds, device=args.device
        )
        out["model_size"].append({"preset": preset, "params": common.count_params(model), **r})
        del model
    model, _ = common.load_model(args.model, device=args.device, dtype=args.dtype)
    for seq_len in args.seq_lens:
        batch = random_batch(model, args.batch, seq_len, args.device)
        r = step_ratio(
            model, batch, k=args.num_samples, steps=1, rounds=args.scale_rounds, device=args.device
        )
        out["seq_len"].append({"seq_len": seq_len, **r})
    return out


def report(results: dict, info: dict, command: str) -> str:
    s, m, lr = results["step"], results["memory"], results["long_run"]
    clock = "process CPU time" if s["clock"] == "process_cpu" else "wall time"
    lines = [
        common.provenance_block(info, command),
        "",
        f"Model: `{results['model']}` ({results['params'] / 1e6:.2f}M parameters), batch "
        f"{s['batch'][0]} x {s['batch'][1]} tokens, K = {s['k']}, float32. Times are {clock} "
        "(one thread: on this shared machine wall time mostly measures the neighbours).",
        "",
        common.markdown_table(
            ["measure", "value", "target"],
            [
                [
                    "one PG step / K plain forwards",
                    f"**{s['ratio']:.3f}** (rounds {s['ratio_spread'][0]:.3f}-{s['ratio_spread'][1]:.3f})",
                    "<= 1.15",
                ],
                [
                    "one PG step / K forwards that also compute the loss",
                    f"{s['ratio_vs_forward_with_loss']:.3f}",
                    "",
                ],
                [
                    "forward / forward+loss / PG step (s)",
                    f"{s['forward_s']:.4f} / {s['forward_loss_s']:.4f} / {s['pg_s']:.4f}",
                    "",
                ],
                [
                    "PG peak memory / forward-only peak",
                    f"**{m['pg_over_forward']:.3f}**",
                    "<= 1.2",
                ],
                ["PG peak memory / one-backward peak", f"**{m['pg_over_backward']:.3f}**", ""],
                ["backward peak / forward peak", f"{m['backward_over_forward']:.3f}", ""],
                [
                    "peak MiB: forward / backward / PG (weights + work)",
                    " / ".join(f"{m['used_mb'][k]:.1f}" for k in ("forward", "backward", "pg")),
                    "",
                ],
                [
                    f"RSS growth over {lr['steps']} steps (10% -> 100%)",
                    f"**{lr['growth_mb_10_to_100_pct']:+.1f} MiB**",
                    "flat",
                ],
            ],
        ),
        "",
        f"Resident memory during the long run ({lr['steps']} steps, batch "
        f"{lr['batch'][0]} x {lr['batch'][1]}, {lr['seconds']:.0f} s):",
        "",
        common.markdown_table(
            ["step", *lr["rss_mb_at_step"].keys()],
            [["RSS MiB", *(f"{v:.0f}" for v in lr["rss_mb_at_step"].values())]],
        ),
        "",
        "Step time vs model size (random weights, same batch):",
        "",
        common.markdown_table(
            ["model", "params", "K forwards (s)", "PG step (s)", "ratio"],
            [
                [
                    f"random:{r['preset']}",
                    f"{r['params'] / 1e6:.1f}M",
                    f"{r['forward_s'] * r['k']:.3f}",
                    f"{r['pg_s']:.3f}",
                    f"{r['ratio']:.3f}",
                ]
                for r in results["scaling"]["model_size"]
            ],
        ),
        "",
        f"Step time vs sequence length (`{results['model']}`, batch {s['batch'][0]}):",
        "",
        common.markdown_table(
            ["seq len", "K forwards (s)", "PG step (s)", "ratio"],
            [
                [
                    r["seq_len"],
                    f"{r['forward_s'] * r['k']:.3f}",
                    f"{r['pg_s']:.3f}",
                    f"{r['ratio']:.3f}",
                ]
                for r in results["scaling"]["seq_len"]
            ],
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--num-samples", type=int, default=2, help="K")
    p.add_argument("--steps", type=int, default=5, help="PG steps per timing round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--long-steps", type=int, default=3000)
    p.add_argument("--long-batch", type=int, default=2)
    p.add_argument("--long-seq-len", type=int, default=32)
    p.add_argument("--sizes", nargs="+", default=["ref", "16m", "60m"])
    p.add_argument("--seq-lens", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--scale-rounds", type=int, default=2)
    p.add_argument(
        "--in-process",
        action="store_true",
        help="memory probes and the long run in this process (cheaper, less isolated; --quick)",
    )
    p.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_long", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        if args.model == "reference":
            args.model = "random:tiny"
        args.batch, args.seq_len, args.steps, args.rounds = 2, 16, 2, 1
        args.long_steps, args.sizes, args.seq_lens, args.scale_rounds = 40, ["tiny"], [16, 32], 1
        args.in_process = True
    if args._probe:
        print(json.dumps(probe(args._probe, args)))
        return None
    if args._long:
        print(json.dumps(long_run(args)))
        return None

    torch.set_num_threads(1) if args.device == "cpu" else None
    info = common.machine_info(args.device)
    command = common.command_line()
    model, _ = common.load_model(args.model, device=args.device, dtype=args.dtype)
    batch = random_batch(model, args.batch, args.seq_len, args.device)
    print("step time ...", flush=True)
    step = step_ratio(
        model, batch, k=args.num_samples, steps=args.steps, rounds=args.rounds, device=args.device
    )
    print(json.dumps(step, indent=1), flush=True)
    params = common.count_params(model)
    del model
    print("peak memory (fresh subprocesses) ...", flush=True)
    mem = memory(args)
    print(json.dumps(mem["used_mb"]), flush=True)
    print(f"long run ({args.long_steps} steps) ...", flush=True)
    long = run_long(args)
    print(json.dumps(long["rss_mb_at_step"]), flush=True)
    print("scaling ...", flush=True)
    scale = scaling(args)
    results = {
        "model": args.model,
        "params": params,
        "machine": info,
        "command": command,
        "step": step,
        "memory": mem,
        "long_run": long,
        "scaling": scale,
    }
    text = report(results, info, command)
    print(text)
    if args.no_write and args.output:
        common.write_json(args.output, results)
    if not args.no_write:
        suffix = "" if args.device == "cpu" else f"-{args.device.split(':')[0]}"
        output = args.output or common.RESULTS_DIR / f"cost{suffix}.json"
        common.write_json(output, results)
        if not args.quick:
            heading = "## Pruning cost" if args.device == "cpu" else "## GPU: pruning cost"
            common.update_section(heading, text)
    return results


if __name__ == "__main__":
    main()

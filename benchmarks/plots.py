"""Draw the benchmarks' results: the sparsity / quality / speed trade-off as PNGs.

Reads the JSON files in ``benchmarks/results/`` and writes to ``docs/images/``:

- ``ppl_vs_sparsity[-TAG].png``: WikiText-2 test perplexity against sparsity for every
  method (``bench_quality.py``: ``quality[-TAG].json``, or its ``.partial.json`` while
  the run is going), one panel per budget, with the before / after LoRA recovery points
  of ``bench_recovery.py`` (``recovery[-TAG].json``) when they exist; one figure per
  subject (the bundled reference model; ``-smollm2``: SmolLM2-135M-Instruct);
- ``pg_learning_curve[-TAG].png``: PG's loss and held-out perplexity against steps
  (``bench_pg_curve.py``: ``pg-curve[-TAG].json``);
- ``latency_vs_sparsity[-cuda].png``: forward latency ratio and generation tokens/s
  against sparsity for every model ``bench_speed.py`` measured (``speed[-TAG].json``,
  ``speed-cuda[-TAG].json`` on a GPU).

    python benchmarks/plots.py      # redraws every plot whose inputs exist

The drawing functions themselves are ``hf_faithful.evaluation.plots`` (the pruning
explorer Space draws with them too).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hf_faithful.evaluation.plots import (
    latency_vs_sparsity_figure,
    learning_curve_figure,
    perplexity_vs_sparsity_figure,
    save_figure,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
IMAGES_DIR = BENCH_DIR.parent / "docs" / "images"
# result-file suffix -> subject name (the two models the quality figures are drawn for)
SUBJECTS = {"": "bundled reference model", "-smollm2": "SmolLM2-135M-Instruct"}


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------ quality
def quality_input(results_dir: Path, suffix: str) -> tuple[dict, dict, Path] | None:
    """``(results, meta, file)`` of a subject's quality run: the finished file, else the
    partial one (results only) of a run still going; None when neither exists."""
    final = results_dir / f"quality{suffix}.json"
    if final.exists():
        data = _load(final)
        return data["results"], data.get("meta", {}), final
    partial = results_dir / f"quality{suffix}.partial.json"
    if partial.exists():
        return _load(partial), {}, partial
    return None


def recovery_input(results_dir: Path, suffix: str) -> tuple[list[dict], str] | None:
    """``(rows, label)`` of ``bench_recovery.py``'s results for a subject, or None."""
    path = results_dir / f"recovery{suffix}.json"
    if not path.exists():
        return None
    data = _load(path)
    meta = data.get("meta", {})
    return data["results"], short_method(meta.get("prune", "pruned"))


def short_method(description: str) -> str:
    """A legend-sized name for a ``describe_method`` line ("PG +comp", "FLAP +comp")."""
    comp = " +comp" if "bias compensation" in description else ""
    for prefix, name in (("policy_gradient", "PG"), ("one-shot FLAP", "FLAP"),
                         ("one-shot Wanda-sp", "Wanda-sp")):  # fmt: skip
        if description.startswith(prefix):
            return name + comp
    return description


def quality_title(subject: str, results: dict, meta: dict, partial: bool) -> str:
    dense = results.get("dense", {})
    params = f" ({dense['params'] / 1e6:.1f}M parameters)" if dense.get("params") else ""
    chunks = "128-token chunks"
    if meta.get("ppl_chunks"):
        total = meta.get("total_chunks")
        chunks = f"first {meta['ppl_chunks']}" + (f" of {total}" if total else "") + f" {chunks}"
    return (
        f"{subject}{params}: WikiText-2 test perplexity ({chunks}) "
        "against sparsity; solid: with bias compensation (+comp), dashed: without"
        + (" [partial results: the run is still going]" if partial else "")
    )


def draw_quality(results_dir: Path, images_dir: Path, suffix: str) -> Path | None:
    found = quality_input(results_dir, suffix)
    if found is None:
        return None
    results, meta, source = found
    recovery = recovery_input(results_dir, suffix)
    fig = perplexity_vs_sparsity_figure(
        results,
        title=quality_title(
            SUBJECTS.get(suffix, suffix.strip("-")),
            results,
            meta,
            source.name.endswith(".partial.json"),
        ),
        recovery=recovery[0] if recovery else None,
        recovery_label=recovery[1] if recovery else "",
        budgets=meta.get("args", {}).get("budgets"),
    )
    return Path(save_figure(fig, images_dir / f"ppl_vs_sparsity{suffix}.png"))


# -------------------------------------------------------------------- PG learning curve
def pg_curve_figure(data: dict):
    """The learning-curve figure of a ``bench_pg_curve.py`` results dict."""
    meta = data["meta"]
    history = [{"step": 0, "eval_perplexity": data["init"]["dev_ppl"]}, *data["history"]]
    lines = {"dense": data["dense"]["dev_ppl"], "one-shot Wanda-sp init": data["init"]["dev_ppl"]}
    args = meta["args"]
    title = (
        f"PG on `{meta['model']}` at {args['sparsity']:.0%} sparsity ({args['budget']} budget, "
        f"bias compensation, Wanda-sp init, batch {args['batch_size']} x {args['seq_len']}, "
        f"K {args['num_samples']}, lr {args['lr']:g}); held-out: last {meta['dev_chunks']} "
        "calibration chunks"
    )
    return learning_curve_figure(history, title=title, reference_lines=lines)


def draw_pg_curve(results_dir: Path, images_dir: Path, suffix: str) -> Path | None:
    path = results_dir / f"pg-curve{suffix}.json"
    if not path.exists():
        return None
    return Path(
        save_figure(pg_curve_figure(_load(path)), images_dir / f"pg_learning_curve{suffix}.png")
    )


# ---------------------------------------------------------------------------- speed
def speed_inputs(results_dir: Path, device: str = "cpu") -> dict[str, dict]:
    """Model label -> ``bench_speed.py`` results, for every speed file of ``device``."""
    runs = {}
    for path in sorted(results_dir.glob("speed*.json")):
        stem = path.stem  # speed, speed-<tag>, speed-cuda, speed-cuda-<tag>
        is_cuda = stem == "speed-cuda" or stem.startswith("speed-cuda-")
        if is_cuda != (device == "cuda"):
            continue
        data = _load(path)
        if data.get("model") == "random:tiny":  # a smoke test's file
            continue
        runs[data.get("model", stem)] = data
    # the bundled reference model first
    return dict(sorted(runs.items(), key=lambda kv: kv[0] != "reference"))


def latency_figure(runs: dict[str, dict], device: str = "cpu"):
    first = next(iter(runs.values()))
    clock = "process CPU time, 1 thread" if first.get("clock") == "process_cpu" else "wall time"
    where = "GPU" if device == "cuda" else "CPU"
    title = (
        f"Pruned model speed on {where} ({clock}; median of repetitions): models pruned one-shot "
        "(magnitude, global budget) and physically compressed"
    )
    return latency_vs_sparsity_figure(runs, title=title)


def draw_latency(results_dir: Path, images_dir: Path, device: str = "cpu") -> Path | None:
    runs = speed_inputs(results_dir, device)
    if not runs:
        return None
    name = "latency_vs_sparsity" + ("-cuda" if device == "cuda" else "") + ".png"
    return Path(save_figure(latency_figure(runs, device), images_dir / name))


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Path | None]:
    """Redraw every plot whose inputs exist; returns plot name -> written path (None:
    skipped)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--images-dir", type=Path, default=IMAGES_DIR)
    args = p.parse_args(argv)
    jobs = {}
    for suffix in SUBJECTS:
        jobs[f"ppl_vs_sparsity{suffix}"] = (
            lambda s=suffix: draw_quality(args.results_dir, args.images_dir, s),
            f"quality{suffix}.json (or .partial.json)",
        )
        jobs[f"pg_learning_curve{suffix}"] = (
            lambda s=suffix: draw_pg_curve(args.results_dir, args.images_dir, s),
            f"pg-curve{suffix}.json",
        )
    for device in ("cpu", "cuda"):
        name = "latency_vs_sparsity" + ("-cuda" if device == "cuda" else "")
        jobs[name] = (
            lambda d=device: draw_latency(args.results_dir, args.images_dir, d),
            "speed-cuda*.json" if device == "cuda" else "speed*.json",
        )
    written: dict[str, Path | None] = {}
    for name, (draw, needs) in jobs.items():
        written[name] = draw()
        if written[name] is None:
            print(f"skipped {name}.png: no {needs} in {args.results_dir}")
        else:
            print(f"wrote {written[name]}")
    return written


if __name__ == "__main__":
    main()

"""Pictures of the pruning trade-off: perplexity against sparsity, PG's learning curve,
and pruned-model latency against sparsity.

The functions take plain dicts and lists (the shapes the benchmarks write to
``benchmarks/results/*.json``) and return a matplotlib ``Figure``; ``save_figure``
writes one as a PNG. The benchmarks (``benchmarks/plots.py``) and the pruning explorer
Space draw with the same functions. matplotlib is imported only when a figure is drawn
(it is in the ``spaces`` extra: ``pip install 'hf-faithful[spaces]'``).

Shapes:

- quality results (``bench_quality.py``'s ``results``): ``{"dense": {"ppl": p},
  "<budget>/<sparsity>/<method>": {"ppl": p, "ppl_min"?: a, "ppl_max"?: b}}``, method
  ``random``, ``magnitude``, ``wanda_sp``, ``flap``, ``pg`` or any other name, each
  optionally with the suffix ``+comp`` (bias compensation);
- recovery rows (``bench_recovery.py``'s ``results``): ``[{"sparsity": s,
  "ppl_before": p, "ppl_after": q}]``;
- a pruner's ``history``: ``[{"step": n, "loss": l, "baseline": b}, {"step": n,
  "eval_perplexity": p}]``;
- speed results (``bench_speed.py``): ``{"params": {name: {"matmul": n}}, "timings":
  {name: {"forward_s": {"BxL": s}, "generate_tokens_per_s": t}}}``, names ``dense``
  and ``"<percent>% pruned"``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

COMP = "+comp"
METHOD_COLORS = {
    "random": "#9ca3af",
    "magnitude": "#8b5cf6",
    "wanda_sp": "#2563eb",
    "flap": "#059669",
    "pg": "#ea580c",
}
METHOD_NAMES = {
    "random": "random",
    "magnitude": "magnitude",
    "wanda_sp": "Wanda-sp",
    "flap": "FLAP",
    "pg": "PG",
}
_EXTRA_COLORS = ["#db2777", "#0891b2", "#65a30d", "#b45309", "#4b5563"]
_BUDGET_ORDER = {"global": 0, "layer": 1}


def _figure(ncols: int, width: float, height: float):
    """A new figure with ``ncols`` axes side by side. It is a bare ``Figure``, not one of
    pyplot's: nothing global changes (backend, open figures), so servers and threads
    can draw freely; ``savefig`` renders PNGs with Agg."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "drawing plots needs matplotlib: pip install 'hf-faithful[spaces]'"
        ) from err
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _log_y(ax) -> None:
    """Log y axis labelled in plain numbers (60, 100, 200, not 6 x 10^1); call it after
    plotting: intermediate ticks are labelled only when the data span under a decade or
    so (more would overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    low, high = ax.get_ylim()
    subs = tuple(range(2, 10)) if high <= 5 * low else (2.0, 3.0, 5.0)
    ax.yaxis.set_minor_locator(LogLocator(subs=subs))
    ax.yaxis.set_minor_formatter(plain if high <= 30 * low else NullFormatter())


def _suptitle(fig, title: str | None) -> None:
    """A figure title wrapped to the figure's width."""
    if title:
        import textwrap

        width = max(40, int(fig.get_figwidth() * 14))
        fig.suptitle("\n".join(textwrap.wrap(title, width, break_on_hyphens=False)), fontsize=9)


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 120) -> str:
    """Write ``fig`` as a PNG (atomically: a tmp file, then ``os.replace``); returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png", dpi=dpi)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------- perplexity vs sparsity
def parse_quality_results(
    results: Mapping[str, Any],
) -> dict[str, dict[str, list[tuple[float, float, float | None, float | None]]]]:
    """``{budget: {method: [(sparsity, ppl, ppl_min, ppl_max), ...]}}`` from a quality
    results dict, points sorted by sparsity; entries without a finite ``ppl`` are left out."""
    out: dict[str, dict[str, list]] = {}
    for key, value in results.items():
        parts = key.split("/")
        if len(parts) != 3 or not isinstance(value, Mapping):
            continue
        budget, sparsity, method = parts
        try:
            s = float(sparsity)
        except ValueError:
            continue
        ppl = value.get("ppl")
        if not isinstance(ppl, int | float) or not math.isfinite(ppl):
            continue
        out.setdefault(budget, {}).setdefault(method, []).append(
            (s, float(ppl), value.get("ppl_min"), value.get("ppl_max"))
        )
    for methods in out.values():
        for points in methods.values():
            points.sort()
    return dict(sorted(out.items(), key=lambda kv: (_BUDGET_ORDER.get(kv[0], 9), kv[0])))


def method_label(method: str) -> str:
    base, comp = method.removesuffix(COMP), method.endswith(COMP)
    return METHOD_NAMES.get(base, base) + (" +comp" if comp else "")


def _method_order(method: str) -> tuple[int, str, bool]:
    base = method.removesuffix(COMP)
    order = list(METHOD_COLORS)
    return (order.index(base) if base in order else len(order), base, method.endswith(COMP))


def _method_color(method: str, extra: dict[str, str]) -> str:
    base = method.removesuffix(COMP)
    if base in METHOD_COLORS:
        return METHOD_COLORS[base]
    if base not in extra:
        extra[base] = _EXTRA_COLORS[len(extra) % len(_EXTRA_COLORS)]
    return extra[base]


def perplexity_vs_sparsity_figure(
    results: Mapping[str, Any],
    *,
    title: str | None = None,
    recovery: Sequence[Mapping[str, Any]] | None = None,
    recovery_label: str = "PG",
    points: Sequence[Mapping[str, Any]] | None = None,
    budgets: Iterable[str] | None = None,
):
    """Perplexity against sparsity, one panel per budget (log y).

    One line per method (colour by method; solid with bias compensation, ``+comp``,
    dashed without), error bars where an entry has ``ppl_min`` / ``ppl_max`` (PG's seed
    spread), the dense perplexity as a horizontal line and 1.5x dense dotted. ``recovery``
    rows add "before" and "after LoRA recovery" markers to the global-budget panel
    (``recovery_label`` names how those models were pruned); ``points`` adds single
    labelled markers (``{"label", "sparsity", "ppl"}``) to every panel.
    """
    parsed = parse_quality_results(results)
    if budgets is not None:
        parsed = {b: parsed.get(b, {}) for b in budgets}
    if not parsed:
        parsed = {"global": {}}
    dense = (results.get("dense") or {}).get("ppl")
    fig, axes = _figure(len(parsed), 5.6 * len(parsed) + 0.6, 5.4)
    extra_colors: dict[str, str] = {}
    for ax, (budget, methods) in zip(axes, parsed.items()):
        for method in sorted(methods, key=_method_order):
            pts = methods[method]
            xs = [100 * p[0] for p in pts]
            ys = [p[1] for p in pts]
            color = _method_color(method, extra_colors)
            style = "-" if method.endswith(COMP) else "--"
            ax.plot(xs, ys, style, marker="o", ms=4, color=color, label=method_label(method))
            spread = [(x, y, lo, hi) for x, (_, y, lo, hi) in zip(xs, pts) if lo is not None and hi is not None]  # fmt: skip
            if spread:
                ax.errorbar(
                    [x for x, *_ in spread],
                    [y for _, y, *_ in spread],
                    yerr=[
                        [max(y - lo, 0.0) for _, y, lo, _ in spread],
                        [max(hi - y, 0.0) for _, y, _, hi in spread],
                    ],
                    fmt="none",
                    ecolor=color,
                    capsize=3,
                )
        if recovery and budget == budgets_first(parsed):
            _draw_recovery(ax, recovery, recovery_label)
        for point in points or ():
            ax.plot(
                [100 * float(point["sparsity"])],
                [float(point["ppl"])],
                linestyle="none",
                marker=point.get("marker", "*"),
                ms=13,
                color=point.get("color", "#dc2626"),
                markeredgecolor="black",
                label=point["label"],
            )
        if isinstance(dense, int | float) and math.isfinite(dense):
            ax.axhline(dense, color="black", lw=1, label=f"dense ({dense:.1f})")
            ax.axhline(1.5 * dense, color="black", lw=1, ls=":", label="1.5 x dense")
        _log_y(ax)
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("perplexity")
        ax.set_title(f"{budget} budget")
        ax.grid(True, which="both", alpha=0.25)
    _shared_legend(fig, axes)
    _suptitle(fig, title)
    return fig


def _shared_legend(fig, axes) -> None:
    """One legend for all panels, below them, so no line is hidden behind it."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=min(4, len(handles)),
            fontsize=7,
        )


def budgets_first(parsed: Mapping[str, Any]) -> str:
    """The panel recovery markers go on: global when drawn, else the first."""
    return "global" if "global" in parsed else next(iter(parsed))


def _draw_recovery(ax, rows: Sequence[Mapping[str, Any]], label: str) -> None:
    rows = sorted(
        (r for r in rows if r.get("ppl_before") is not None and r.get("ppl_after") is not None),
        key=lambda r: r["sparsity"],
    )
    if not rows:
        return
    xs = [100 * float(r["sparsity"]) for r in rows]
    before = [float(r["ppl_before"]) for r in rows]
    after = [float(r["ppl_after"]) for r in rows]
    for x, b, a in zip(xs, before, after):
        ax.annotate(
            "",
            xy=(x, a),
            xytext=(x, b),
            arrowprops=dict(arrowstyle="->", color="#be123c", lw=1),
        )
    ax.plot(xs, before, linestyle="none", marker="x", ms=7, color="#be123c",
            label=f"{label}, before recovery")  # fmt: skip
    ax.plot(xs, after, linestyle="none", marker="P", ms=8, color="#be123c",
            label=f"{label}, after LoRA recovery")  # fmt: skip


# ------------------------------------------------------------------- learning curve
def learning_curve_figure(
    history: Sequence[Mapping[str, Any]],
    *,
    title: str | None = None,
    reference_lines: Mapping[str, float] | None = None,
):
    """PG's learning curve from a pruner's ``history``: the sampled-mask loss and its
    moving-average baseline against steps, and, when the history has
    ``eval_perplexity`` entries, held-out perplexity (hard masks) against steps in a
    second panel with ``reference_lines`` (label -> perplexity, e.g. dense) drawn flat."""
    logged = [h for h in history if "loss" in h]
    evals = [h for h in history if "eval_perplexity" in h]
    fig, axes = _figure(2 if evals else 1, 11.0 if evals else 6.0, 3.8)
    ax = axes[0]
    if logged:
        steps = [h["step"] for h in logged]
        ax.plot(steps, [h["loss"] for h in logged], color="#ea580c", lw=1.2,
                label="loss (mean over sampled masks)")  # fmt: skip
        if any("baseline" in h for h in logged):
            with_base = [h for h in logged if "baseline" in h]
            ax.plot([h["step"] for h in with_base], [h["baseline"] for h in with_base],
                    color="black", lw=1, ls="--", label="baseline (moving average)")  # fmt: skip
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no logged steps", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("policy-gradient loss")
    ax.grid(True, alpha=0.25)
    if evals:
        ax = axes[1]
        ax.plot([h["step"] for h in evals], [h["eval_perplexity"] for h in evals],
                marker="o", ms=4, color="#2563eb", label="held-out perplexity (hard masks)")  # fmt: skip
        styles = iter([("black", "-"), ("#6b7280", "--"), ("#6b7280", ":"), ("#9ca3af", "-.")])
        for name, value in (reference_lines or {}).items():
            if value is None or not math.isfinite(value):
                continue
            color, ls = next(styles, ("#9ca3af", ":"))
            ax.axhline(value, color=color, ls=ls, lw=1, label=f"{name} ({value:.1f})")
        _log_y(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("perplexity")
        ax.set_title("held-out perplexity")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8)
    _suptitle(fig, title)
    return fig


# ------------------------------------------------------------------ latency vs sparsity
def sparsity_of(name: str) -> float | None:
    """0 for ``dense``, 0.3 for ``"30% pruned"``; None for other names."""
    if name == "dense":
        return 0.0
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*% pruned\s*", name)
    return float(found.group(1)) / 100 if found else None


def speed_curves(speed: Mapping[str, Any]) -> dict[str, Any]:
    """Per sparsity (dense first): forward latency ratios per shape, generation tokens/s
    and the ideal (matmul-parameter) ratio, from a ``bench_speed.py`` results dict."""
    timings = speed["timings"]
    params = speed.get("params", {})
    dense = timings["dense"]
    rows = sorted(
        (s, name) for name in timings if (s := sparsity_of(name)) is not None
    )  # fmt: skip
    shapes = list(dense["forward_s"])
    return {
        "sparsity": [s for s, _ in rows],
        "forward_ratio": {
            shape: [timings[n]["forward_s"][shape] / dense["forward_s"][shape] for _, n in rows]
            for shape in shapes
        },
        "tokens_per_s": [timings[n]["generate_tokens_per_s"] for _, n in rows],
        "ideal": [
            params[n]["matmul"] / params["dense"]["matmul"]
            if n in params and "dense" in params
            else None
            for _, n in rows
        ],
    }


def latency_vs_sparsity_figure(runs: Mapping[str, Mapping[str, Any]], *, title: str | None = None):
    """Pruned-model speed against sparsity for one or more models (``runs``: label ->
    ``bench_speed.py`` results): forward latency pruned / dense per batch shape with the
    ideal matmul-parameter ratio dotted (left), and greedy generation tokens/s (right)."""
    fig, (left, right) = _figure(2, 11.5, 4.0)
    markers = ["o", "s", "^", "D", "v"]
    for i, (label, speed) in enumerate(runs.items()):
        color = _EXTRA_COLORS[i % len(_EXTRA_COLORS)] if len(runs) > 1 else "#2563eb"
        curves = speed_curves(speed)
        xs = [100 * s for s in curves["sparsity"]]
        for j, (shape, ratios) in enumerate(curves["forward_ratio"].items()):
            left.plot(xs, ratios, marker=markers[j % len(markers)], ms=4, color=color,
                      lw=1.2, ls=["-", "--", "-."][j % 3], label=f"{label}: forward {shape}")  # fmt: skip
        ideal = [(x, r) for x, r in zip(xs, curves["ideal"]) if r is not None]
        if ideal:
            left.plot([x for x, _ in ideal], [r for _, r in ideal], ls=":", lw=1.5, color=color,
                      label=f"{label}: ideal (matmul parameters)")  # fmt: skip
        right.plot(xs, curves["tokens_per_s"], marker="o", ms=4, color=color, label=label)
    left.axhline(1.0, color="black", lw=0.8)
    left.set_xlabel("sparsity (%)")
    left.set_ylabel("latency pruned / dense")
    left.set_title("forward latency ratio")
    left.set_ylim(bottom=0)
    left.grid(True, alpha=0.25)
    left.legend(fontsize=7)
    right.set_xlabel("sparsity (%)")
    right.set_ylabel("tokens / s")
    right.set_title("greedy generation, batch 1, KV cache")
    if len(runs) > 1:
        _log_y(right)
    right.grid(True, which="both", alpha=0.25)
    right.legend(fontsize=7)
    _suptitle(fig, title)
    return fig

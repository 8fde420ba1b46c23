"""The trade-off pictures: perplexity against sparsity, PG's learning curve and latency
against sparsity, drawn from hand-made results of the benchmarks' shapes."""

from __future__ import annotations

import sys

import pytest

from hf_faithful.evaluation import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

QUALITY = {
    "dense": {"ppl": 60.0, "params": 4_196_608},
    "global/0.2/magnitude": {"ppl": 80.0},
    "global/0.5/magnitude": {"ppl": 240.0},
    "global/0.2/magnitude+comp": {"ppl": 75.0},
    "global/0.5/magnitude+comp": {"ppl": 200.0},
    "global/0.5/pg+comp": {"ppl": 95.0, "ppl_min": 90.0, "ppl_max": 101.0},
    "layer/0.2/wanda_sp": {"ppl": 70.0},
    "layer/0.5/wanda_sp": {"ppl": float("nan")},  # a failed run is left out
    "layer/0.3/wanda_sp": {"ppl": 85.0},
}


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def _line(ax, label: str):
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_perplexity_vs_sparsity_one_panel_per_budget(tmp_path):
    recovery = [
        {"sparsity": 0.5, "ppl_before": 150.0, "ppl_after": 90.0},
        {"sparsity": 0.3, "ppl_before": 110.0, "ppl_after": 75.0},
    ]
    points = [{"label": "this model", "sparsity": 0.4, "ppl": 100.0}]
    fig = plots.perplexity_vs_sparsity_figure(
        QUALITY, title="reference", recovery=recovery, recovery_label="PG", points=points
    )
    glob, layer = fig.axes
    assert glob.get_title() == "global budget" and layer.get_title() == "layer budget"
    assert _labels(glob) == [
        "magnitude",
        "magnitude +comp",
        "PG +comp",
        "PG, before recovery",
        "PG, after LoRA recovery",
        "this model",
        "dense (60.0)",
        "1.5 x dense",
    ]
    # recovery goes on the global panel only; the other panel has its methods and the rest
    assert _labels(layer) == ["Wanda-sp", "this model", "dense (60.0)", "1.5 x dense"]
    # solid with compensation, dashed without; points in percent, sorted by sparsity
    assert _line(glob, "magnitude +comp").get_linestyle() == "-"
    assert _line(glob, "magnitude").get_linestyle() == "--"
    assert list(_line(glob, "magnitude").get_xdata()) == [20.0, 50.0]
    assert list(_line(layer, "Wanda-sp").get_ydata()) == [70.0, 85.0]  # NaN left out
    assert list(_line(glob, "PG, after LoRA recovery").get_ydata()) == [75.0, 90.0]
    assert list(_line(glob, "1.5 x dense").get_ydata()) == [90.0, 90.0]
    assert glob.get_yscale() == "log"
    # PG's seed spread is drawn as error bars (one collection of vertical bars)
    assert len(glob.collections) == 1
    assert fig.get_suptitle() == "reference"

    path = plots.save_figure(fig, tmp_path / "sub" / "ppl.png")
    data = (tmp_path / "sub" / "ppl.png").read_bytes()
    assert path.endswith("ppl.png") and data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_perplexity_vs_sparsity_chosen_budgets_and_empty_results():
    fig = plots.perplexity_vs_sparsity_figure(QUALITY, budgets=["global"])
    assert len(fig.axes) == 1
    assert "Wanda-sp" not in _labels(fig.axes[0])
    # a run that has only measured the dense model yet still draws
    fig = plots.perplexity_vs_sparsity_figure({"dense": {"ppl": 59.0}})
    assert _labels(fig.axes[0]) == ["dense (59.0)", "1.5 x dense"]


def test_parse_quality_results_sorts_and_skips():
    parsed = plots.parse_quality_results(QUALITY)
    assert list(parsed) == ["global", "layer"]
    assert parsed["global"]["pg+comp"] == [(0.5, 95.0, 90.0, 101.0)]
    assert [p[0] for p in parsed["layer"]["wanda_sp"]] == [0.2, 0.3]


HISTORY = [
    *({"step": s, "loss": 5.0 - s / 100, "baseline": 5.05 - s / 100, "lr": 0.05} for s in (5, 10, 15, 20)),
    {"step": 0, "eval_perplexity": 130.0},
    {"step": 10, "eval_perplexity": 110.0},
    {"step": 20, "eval_perplexity": 100.0},
]  # fmt: skip


def test_learning_curve_loss_and_held_out_perplexity(tmp_path):
    fig = plots.learning_curve_figure(
        HISTORY, title="PG", reference_lines={"dense": 60.0, "init": 130.0, "missing": None}
    )
    loss, ppl = fig.axes
    assert _labels(loss) == ["loss (mean over sampled masks)", "baseline (moving average)"]
    assert list(_line(loss, "loss (mean over sampled masks)").get_xdata()) == [5, 10, 15, 20]
    assert _labels(ppl) == ["held-out perplexity (hard masks)", "dense (60.0)", "init (130.0)"]
    assert list(_line(ppl, "held-out perplexity (hard masks)").get_ydata()) == [130.0, 110.0, 100.0]
    plots.save_figure(fig, tmp_path / "curve.png")
    data = (tmp_path / "curve.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_learning_curve_without_evaluations_or_steps():
    fig = plots.learning_curve_figure([h for h in HISTORY if "loss" in h])
    assert len(fig.axes) == 1 and len(_labels(fig.axes[0])) == 2
    fig = plots.learning_curve_figure([])  # a one-shot prune: an empty, labelled panel
    assert len(fig.axes) == 1 and _labels(fig.axes[0]) == []
    assert fig.axes[0].texts[0].get_text() == "no logged steps"


def _speed(scale: float) -> dict:
    return {
        "params": {
            "dense": {"matmul": 1000},
            "50% pruned": {"matmul": 520},
            "30% pruned": {"matmul": 710},
        },
        "timings": {
            "dense": {"forward_s": {"1x128": 0.02, "8x128": 0.16}, "generate_tokens_per_s": 100.0},
            "50% pruned": {"forward_s": {"1x128": 0.012, "8x128": 0.09}, "generate_tokens_per_s": 150.0},
            "30% pruned": {"forward_s": {"1x128": 0.016, "8x128": 0.12}, "generate_tokens_per_s": 120.0 * scale},
        },
    }  # fmt: skip


def test_latency_vs_sparsity(tmp_path):
    curves = plots.speed_curves(_speed(1.0))
    assert curves["sparsity"] == [0.0, 0.3, 0.5]
    assert curves["forward_ratio"]["8x128"] == pytest.approx([1.0, 0.75, 0.5625])
    assert curves["ideal"] == [1.0, 0.71, 0.52]
    assert curves["tokens_per_s"] == [100.0, 120.0, 150.0]

    fig = plots.latency_vs_sparsity_figure({"ref": _speed(1.0), "other": _speed(0.5)})
    left, right = fig.axes
    assert _labels(left) == [
        "ref: forward 1x128",
        "ref: forward 8x128",
        "ref: ideal (matmul parameters)",
        "other: forward 1x128",
        "other: forward 8x128",
        "other: ideal (matmul parameters)",
    ]
    assert _labels(right) == ["ref", "other"]
    assert list(_line(right, "other").get_ydata()) == [100.0, 60.0, 150.0]
    assert list(_line(left, "ref: ideal (matmul parameters)").get_xdata()) == [0.0, 30.0, 50.0]
    path = tmp_path / "latency.png"
    plots.save_figure(fig, path)
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_sparsity_names():
    assert plots.sparsity_of("dense") == 0.0
    assert plots.sparsity_of("30% pruned") == 0.3
    assert plots.sparsity_of("12.5% pruned") == 0.125
    assert plots.sparsity_of("other") is None


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"hf-faithful\[spaces\]"):
        plots.learning_curve_figure(HISTORY)

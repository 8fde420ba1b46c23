"""benchmarks/plots.py redraws the trade-off pictures from the results files, and
bench_pg_curve.py records and draws PG's learning curve."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import plots  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

QUALITY = {
    "dense": {"ppl": 60.0, "params": 4_196_608},
    "global/0.3/magnitude": {"ppl": 140.0},
    "global/0.5/magnitude": {"ppl": 240.0},
    "global/0.5/pg+comp": {"ppl": 95.0, "ppl_min": 90.0, "ppl_max": 101.0},
    "layer/0.5/wanda_sp": {"ppl": 120.0},
}
SPEED = {
    "model": "reference",
    "clock": "process_cpu",
    "params": {"dense": {"matmul": 100}, "50% pruned": {"matmul": 52}},
    "timings": {
        "dense": {"forward_s": {"1x128": 0.02}, "generate_tokens_per_s": 100.0},
        "50% pruned": {"forward_s": {"1x128": 0.012}, "generate_tokens_per_s": 150.0},
    },
}


def _write(path: Path, data) -> None:
    path.write_text(json.dumps(data))


def _pg_curve() -> dict:
    return {
        "meta": {
            "model": "reference",
            "args": {"sparsity": 0.5, "budget": "global", "batch_size": 8, "seq_len": 128,
                     "num_samples": 2, "lr": 0.05},
            "dev_chunks": 64,
        },
        "dense": {"dev_ppl": 50.0},
        "init": {"dev_ppl": 120.0},
        "final": {"dev_ppl": 100.0},
        "history": [{"step": 5, "loss": 4.9, "baseline": 5.0},
                    {"step": 10, "loss": 4.8, "baseline": 4.9},
                    {"step": 10, "eval_perplexity": 100.0}],
    }  # fmt: skip


def test_main_redraws_what_exists_and_says_what_it_skipped(tmp_path, capsys):
    results, images = tmp_path / "results", tmp_path / "images"
    results.mkdir()
    meta = {"args": {"budgets": ["global", "layer"]}, "ppl_chunks": 128, "total_chunks": 3073}
    _write(results / "quality.json", {"meta": meta, "results": QUALITY})
    # SmolLM2's run is still going: its partial file (results only) is drawn
    _write(results / "quality-smollm2.partial.json", {"dense": {"ppl": 59.0}})
    _write(results / "recovery.json", {
        "meta": {"prune": "policy gradient, 100 steps", "ppl_chunks": "all chunks"},
        "results": [{"sparsity": 0.5, "ppl_before": 150.0, "ppl_after": 90.0}],
    })  # fmt: skip
    _write(results / "pg-curve.json", _pg_curve())
    _write(results / "speed.json", SPEED)
    _write(results / "speed-random-tiny.json", {**SPEED, "model": "random:tiny"})  # a smoke test's

    written = plots.main(["--results-dir", str(results), "--images-dir", str(images)])

    assert {name for name, path in written.items() if path} == {
        "ppl_vs_sparsity",
        "ppl_vs_sparsity-smollm2",
        "pg_learning_curve",
        "latency_vs_sparsity",
    }
    for name in ("ppl_vs_sparsity", "ppl_vs_sparsity-smollm2", "pg_learning_curve",
                 "latency_vs_sparsity"):  # fmt: skip
        data = (images / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    out = capsys.readouterr().out
    assert "skipped pg_learning_curve-smollm2.png: no pg-curve-smollm2.json" in out
    assert "skipped latency_vs_sparsity-cuda.png" in out
    assert f"wrote {images / 'ppl_vs_sparsity.png'}" in out


def test_quality_figure_contents(tmp_path):
    _write(tmp_path / "quality.json", {"meta": {}, "results": QUALITY})
    _write(tmp_path / "recovery.json", {
        "meta": {"prune": "one-shot Wanda-sp"},
        "results": [{"sparsity": 0.5, "ppl_before": 150.0, "ppl_after": 90.0}],
    })  # fmt: skip
    results, meta, source = plots.quality_input(tmp_path, "")
    assert source.name == "quality.json"
    rows, label = plots.recovery_input(tmp_path, "")
    fig = plots.perplexity_vs_sparsity_figure(results, recovery=rows, recovery_label=label)
    glob, layer = fig.axes
    labels = [ln.get_label() for ln in glob.get_lines() if not ln.get_label().startswith("_")]
    assert "Wanda-sp, after LoRA recovery" in labels
    assert "PG +comp" in labels and "Wanda-sp" not in labels
    assert plots.quality_input(tmp_path, "-smollm2") is None


def test_speed_inputs_by_device(tmp_path):
    _write(tmp_path / "speed.json", SPEED)
    _write(tmp_path / "speed-smollm2.json", {**SPEED, "model": "smollm2"})
    _write(tmp_path / "speed-cuda-random-1b.json", {**SPEED, "model": "random:1b"})
    assert list(plots.speed_inputs(tmp_path)) == ["reference", "smollm2"]
    assert list(plots.speed_inputs(tmp_path, "cuda")) == ["random:1b"]


@pytest.mark.timeout(300)
def test_pg_curve_quick(tmp_path):
    import bench_pg_curve

    out, image = tmp_path / "pg-curve.json", tmp_path / "curve.png"
    bench_pg_curve.main(["--quick", "--output", str(out), "--image", str(image)])
    data = json.loads(out.read_text())
    history = data["history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]
    evals = [h for h in history if "eval_perplexity" in h]
    assert [h["step"] for h in evals] == [2, 4]
    # the last evaluation in the loop (hard masks) is the compressed model on the dev split
    assert evals[-1]["eval_perplexity"] == pytest.approx(data["final"]["dev_ppl"], rel=1e-4)
    assert data["meta"]["compensate"] is True  # --method pg
    assert data["meta"]["dev_chunks"] == 2 and data["meta"]["calibration_chunks"] == 4
    assert all(math.isfinite(data[k]["test_ppl"]) for k in ("dense", "init", "final"))
    assert image.read_bytes().startswith(PNG_MAGIC)

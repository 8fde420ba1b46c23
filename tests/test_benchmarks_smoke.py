"""The pruning benchmarks run end to end with tiny settings and write sane results."""

import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402


def test_update_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n## Pruning cost\n\nold\n\n## SCCM step time\n\ntheirs\n")
    common.update_section("## Pruning cost", "new table", path)
    common.update_section("## Pruned model speed", "speed", path)
    text = path.read_text()
    assert text == (
        "# Results\n\n## Pruning cost\n\nnew table\n\n## SCCM step time\n\ntheirs\n\n"
        "## Pruned model speed\n\nspeed\n"
    )


def test_peak_memory_counter_sees_a_new_allocation():
    """reset_peak brings the peak down to the current RSS, and fresh pages raise it.

    The pages come from an anonymous mmap, not torch: after many tests in one process
    glibc's malloc (whose mmap threshold grows as large blocks are freed) serves a
    16 MiB tensor from heap pages that are still resident, which raises neither the
    RSS nor its peak.
    """
    import mmap

    size = 32 * 2**20
    common.reset_peak()
    before = common.peak_mb()
    assert before - common.rss_mb() < 8  # the reset took: the peak is the current RSS
    buf = mmap.mmap(-1, size)
    try:
        for offset in range(0, size, mmap.PAGESIZE):  # touch every page
            buf[offset] = 1
        assert common.peak_mb() - before > 24
    finally:
        buf.close()


@pytest.mark.timeout(300)
def test_cost_quick(tmp_path):
    import bench_cost

    out = tmp_path / "cost.json"
    bench_cost.main(["--quick", "--output", str(out)])
    data = json.loads(out.read_text())
    assert data["step"]["ratio"] > 0 and data["step"]["forward_s"] > 0
    # In-process with --quick only the plumbing is checked: after earlier tests the
    # allocator may serve a tiny backward pass from freed memory (a zero delta); the
    # counter itself is checked by test_peak_memory_counter_sees_a_new_allocation.
    used = data["memory"]["used_mb"]
    assert set(used) >= {"forward", "backward"}
    assert all(math.isfinite(v) and v >= 0 for v in used.values())
    assert len(data["long_run"]["rss_mb_at_step"]) == 11
    assert [r["seq_len"] for r in data["scaling"]["seq_len"]] == [16, 32]


@pytest.mark.timeout(300)
def test_quality_quick(tmp_path):
    import bench_quality

    out = tmp_path / "quality.json"
    bench_quality.main(
        [
            "--quick",
            "--budgets",
            "global",
            "--methods",
            "dense",
            "magnitude",
            "pg",
            "--output",
            str(out),
        ]  # fmt: skip
    )
    data = json.loads(out.read_text())["results"]
    dense, magnitude, pg = data["dense"], data["global/0.5/magnitude"], data["global/0.5/pg"]
    assert magnitude["params"] < dense["params"] and pg["params"] == magnitude["params"]
    assert len(pg["seeds"]) == 2 and all(math.isfinite(r["ppl"]) for r in pg["seeds"])
    assert pg["ppl_min"] <= pg["ppl"] <= pg["ppl_max"]
    assert 0.0 <= dense["cloze"]["acc"] <= 1.0
    # 50% of every pool is gone, per the layer sizes the compressed model reports
    sizes = magnitude["layer_sizes"]
    assert sum(sizes["num_key_value_heads"]) == 2 and sum(sizes["intermediate_size"]) == 48
    # the report re-renders from the file alone
    again = bench_quality.main(["--report-only", str(out), "--no-write"])
    assert again["results"] == json.loads(out.read_text())["results"]


def test_sparsity_within_factor_hand_computed():
    import bench_quality

    # dense 100, bound 150: crossed between (0.2, 120) and (0.4, 200), linear in log-ppl
    s, reached = bench_quality.sparsity_within(100.0, [(0.4, 200.0), (0.2, 120.0)])
    expected = 0.2 + 0.2 * (math.log(150) - math.log(120)) / (math.log(200) - math.log(120))
    assert reached and s == pytest.approx(expected)
    assert bench_quality.sparsity_within(100.0, [(0.2, 110.0), (0.5, 140.0)]) == (0.5, False)
    s, reached = bench_quality.sparsity_within(100.0, [(0.1, 400.0)])  # from dense at 0
    assert reached and s == pytest.approx(0.1 * math.log(1.5) / math.log(4))


@pytest.mark.timeout(300)
def test_speed_quick(tmp_path):
    import bench_speed

    out = tmp_path / "speed.json"
    bench_speed.main(["--quick", "--output", str(out)])
    data = json.loads(out.read_text())
    params = data["params"]
    assert (
        params["50% pruned"]["matmul"] < params["30% pruned"]["matmul"] < params["dense"]["matmul"]
    )
    for timing in data["timings"].values():
        assert timing["generate_tokens_per_s"] > 0


def test_sccm_experiment_runs_both_arms_on_the_reference_vlm():
    """The paper's experiment in miniature, a few steps: the SFT start and both arms are
    measured per question type with the evaluator's figures."""
    import bench_sccm_experiment

    argv = ["--steps", "1", "--seeds", "0", "--n-test", "6", "--batch", "4"]
    results = bench_sccm_experiment.main([*argv, "--generations", "2", "--no-write"])
    assert [len(results["arms"][arm]) for arm in ("sft", "grpo", "sccm")] == [1, 1, 1]
    for arm in ("sft", "grpo", "sccm"):
        figures = results["arms"][arm][0]["figures"]
        assert set(figures) == {"zoom_needed", "global"}
        zoom = figures["zoom_needed"]
        assert 0.0 <= zoom["accuracy"] <= 1.0 and zoom["n"] > 0
        assert zoom["crop_area"] is None or 0.0 < zoom["crop_area"] <= 1.0
    assert results["arms"]["sft"][0]["figures"]["zoom_needed"]["tool_call_rate"] == 1.0

import json
import math
import subprocess
import sys

import pytest

from hf_faithful.evaluation import BUNDLED_TASKS, TASKS_DIR, evaluate_with_lm_eval, format_results
from hf_faithful.models import REFERENCE_MODEL_DIR


def test_bundled_tasks_on_the_reference_model(reference_model):
    model, tok = reference_model
    results = evaluate_with_lm_eval(model, tok, BUNDLED_TASKS, limit=16, batch_size=8)
    assert set(results) == set(BUNDLED_TASKS)
    cloze = results["hff_cloze"]
    assert 0.0 <= cloze["acc"] <= 1.0 and cloze["acc_stderr"] > 0
    wiki = results["hff_wikitext2"]
    # bits per byte and byte perplexity are two views of the same log-likelihood
    assert wiki["byte_perplexity"] == pytest.approx(2 ** wiki["bits_per_byte"], rel=1e-6)
    assert 1.0 < wiki["byte_perplexity"] < 20.0
    table = format_results(results)
    assert "| hff_cloze | acc |" in table and "±" in table


def test_reference_model_beats_chance_on_the_cloze_task(reference_model):
    model, tok = reference_model
    acc = evaluate_with_lm_eval(model, tok, ["hff_cloze"], limit=200)["hff_cloze"]["acc"]
    assert acc > 0.35  # chance is 0.25 with 4 choices


def test_unknown_task_is_a_clear_error(reference_model):
    model, tok = reference_model
    with pytest.raises(ValueError, match="unknown task.*no_such_task"):
        evaluate_with_lm_eval(model, tok, ["no_such_task"], include_path=TASKS_DIR)


def test_cloze_items_are_well_formed():
    rows = [json.loads(x) for x in (TASKS_DIR / "hff_cloze.jsonl").read_text().splitlines()]
    assert len(rows) == 500
    for row in rows:
        assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4
        assert 0 <= row["label"] < 4
    labels = [r["label"] for r in rows]
    assert max(labels.count(i) for i in range(4)) < 0.35 * len(rows)  # no answer-position bias


def test_lm_eval_cli_runs_the_bundled_task(tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "lm_eval", "--model", "hf",
        "--model_args", f"pretrained={REFERENCE_MODEL_DIR}",
        "--tasks", "hff_cloze", "--include_path", str(TASKS_DIR),
        "--device", "cpu", "--limit", "8", "--output_path", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = list(out.rglob("results*.json"))
    assert files, proc.stdout[-2000:]
    acc = json.loads(files[0].read_text())["results"]["hff_cloze"]["acc,none"]
    assert not math.isnan(acc)

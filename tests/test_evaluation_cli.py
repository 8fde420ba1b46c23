import json
import subprocess
import sys

import pytest

from hf_faithful.cli import main


def test_evaluate_defaults_to_the_reference_model(tmp_path, capsys):
    out = tmp_path / "results.json"
    code = main(
        ["evaluate", "--tasks", "hff_cloze", "--limit", "8", "--perplexity-chunks", "16"]
        + ["--output", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "WikiText-2 test perplexity" in printed and "| hff_cloze | acc |" in printed
    results = json.loads(out.read_text())["results"]
    assert results["wikitext2_test_ppl"]["perplexity@128"] > 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "./missing/model"], "model path does not exist: ./missing/model"),
        (["evaluate", "--tasks", "nope_task", "--no-perplexity"], "unknown task(s): nope_task"),
        (["evaluate", "--limit", "0"], "--limit must be positive"),
    ],
)
def test_bad_input_is_one_line(argv, message):
    proc = subprocess.run(
        [sys.executable, "-m", "hf_faithful.cli", *argv], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

"""`hf-faithful faithfulness`: the offline no-argument demo, endpoints, bad input."""

import argparse
import hashlib
import json

import pytest
from chat_server import ChatServer, request_images
from test_faithfulness_evaluator import dominant_color

import hf_faithful
from hf_faithful.faithfulness import cli
from hf_faithful.faithfulness.config import FaithfulnessConfig
from hf_faithful.mcot.backends import load_local_backend

ASSETS = "hf_faithful/assets/faithfulness"


def _run(argv):
    parser = argparse.ArgumentParser(prog="hf-faithful")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["faithfulness", *argv])
    return args.func(args)


def test_no_arguments_runs_the_bundled_demo_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _run([]) == 0
    report = json.loads((tmp_path / "faithfulness_report" / "report.json").read_text())
    assert report["n_traces"] == 9 and report["n_valid"] == 8
    # the config's defaults: offline do(T) and Gaussian-noise do(V), as in the paper
    assert set(report["effects"]) == {"T:offline", "V:noise_gaussian"}
    assert report["reliability"] is not None and report["sufficiency"]["n"] == 8  # self-judged demo
    assert report["invalid"][0]["source"] == "sample_traces.jsonl:9"
    captured = capsys.readouterr()
    assert "invalid trace sample_traces.jsonl:9: tool call 1: box is inverted" in captured.out
    markdown = (tmp_path / "faithfulness_report" / "report.md").read_text()
    assert "| do(V:noise_gaussian) (ATE_V) |" in markdown
    # what produced it: the data file and its hash, the models as named, the settings
    provenance = report["provenance"]
    sha = hashlib.sha256(cli.SAMPLE_TRACES.read_bytes()).hexdigest()
    assert provenance["data"]["sha256"] == sha and sha in markdown
    assert provenance["data"]["path"] == str(cli.SAMPLE_TRACES)
    assert provenance["model"]["name"] == "tiny" and provenance["judge"]["name"] == "same"
    assert provenance["model"]["backend"] == "LocalVLMBackend" and provenance["rewriter"] is None
    assert provenance["hf_faithful_version"] == hf_faithful.__version__
    assert provenance["settings"] == report["config"]
    assert report["n_intervened"] == {"T:offline": 8, "V:noise_gaussian": 8}
    # whatever the random tiny model does, each warning is in the JSON, the markdown and,
    # last, on stderr
    for warning in report["warnings"]:
        assert f"WARNING: {warning}" in captured.err and warning in markdown


def test_floor_and_failed_regeneration_are_printed_loudly(tmp_path, capsys):
    with ChatServer(lambda body: "") as server:  # the model never answers
        argv = ["--endpoint", server.base_url, "--model", "m", "--data"]
        argv += [f"{ASSETS}/sample_traces.jsonl", "--output-dir", str(tmp_path), "--limit", "4"]
        assert _run(argv) == 0
    captured = capsys.readouterr()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["warnings"][0].startswith("control accuracy is 0 (floor)")
    assert "regeneration failed under control for 4 of 4 samples" in report["warnings"][2]
    assert captured.err.splitlines()[-len(report["warnings"]) :] == [
        f"WARNING: {w}" for w in report["warnings"]
    ]
    assert "> **WARNING:** control accuracy is 0 (floor)" in captured.out  # the table's head
    assert report["provenance"]["data"]["limit"] == 4
    assert report["provenance"]["model"]["name"] == "m"


def test_questions_file_generates_traces_through_endpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "questions.jsonl"
    lines = open(f"{cli.SAMPLE_DIR}/sample_questions.jsonl").read().splitlines()[:3]
    records = [
        json.loads(line) | {"image": str(cli.SAMPLE_DIR / json.loads(line)["image"])}
        for line in lines
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))

    def respond(body):
        images = request_images(body)
        if body.get("stop") == ["</tool_call>"] and len(images) == 1:
            return '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [10, 10, 70, 70]}}'
        if "Rate from 0" in json.dumps(body):
            return "Score: 5"
        return "<answer>" + dominant_color(images[-1]) + "</answer>"

    with ChatServer(respond) as server:
        argv = [
            "--cache",
            "cache.jsonl",
            "--endpoint",
            server.base_url,
            "--model",
            "m",
            "--data",
            str(data),
            "--judge",
            "j",
            "--judge-endpoint",
            server.base_url,
            "--visual",
            "blank",
            "--n-resamples",
            "200",
            "--output-dir",
            "out",
        ]
        assert _run(argv) == 0
        n_requests = len(server.requests)
        assert _run(argv) == 0  # the cache answers everything the second time
        assert len(server.requests) == n_requests
    assert {r["model"] for r in server.requests} == {"m", "j"}
    traces = (tmp_path / "out" / "traces.jsonl").read_text().splitlines()
    assert len(traces) == 3 and json.loads(traces[0])["steps"][0]["bbox_2d"] == [10, 10, 70, 70]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n_valid"] == 3 and report["reliability"]["mean"] == 0.5
    assert report["samples"][0]["answers"]["control"] == "red"
    assert report["effects"]["V:blank"]["intervened_accuracy"] == 0.0


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data file not found"):
        _run(["--data", str(tmp_path / "nope.jsonl")])
    with pytest.raises(ValueError, match="name the served model"):
        _run(["--endpoint", "http://127.0.0.1:9/v1", "--data", f"{ASSETS}/sample_traces.jsonl"])
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        _run(["--model", str(tmp_path / "missing"), "--data", f"{ASSETS}/sample_traces.jsonl"])
    with pytest.raises(SystemExit):
        _run(["--visual", "sepia"])
    with pytest.raises(ValueError, match="name the served model"):
        _run(["--judge", "same", "--judge-endpoint", "http://127.0.0.1:9/v1"])


def _parse(argv):
    parser = argparse.ArgumentParser(prog="hf-faithful")
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["faithfulness", *argv])


def test_options_are_built_from_the_config():
    args = _parse([])
    defaults = FaithfulnessConfig()
    for name in ("visual_interventions", "text_corruptions", "judge_metrics", "match"):
        assert getattr(args, name) == getattr(defaults, name)
    for name in ("baseline", "prefill_answer", "max_new_tokens", "max_tool_calls", "seed"):
        assert getattr(args, name) == getattr(defaults, name)
    assert (args.coords, args.min_side) == (defaults.box_rules.coords, defaults.box_rules.min_side)
    # the old flag names keep working
    args = _parse(
        ["--visual", "blank,shuffle", "--no-prefill-answer", "--coords", "normalized_1000"]
    )
    assert args.visual_interventions == ("blank", "shuffle") and args.prefill_answer is False
    args = _parse(["--visual-interventions", "blank", "--max-turn-tokens", "9", "--min-side", "5"])
    assert args.visual_interventions == ("blank",)
    assert (args.max_turn_tokens, args.min_side) == (9, 5)


def test_local_model_folder(tmp_path):
    from hf_faithful.testing.tiny_vlm import save_tiny_vlm

    path = save_tiny_vlm(tmp_path / "tiny")
    backend = load_local_backend(path, batch_size=2)
    assert hasattr(backend.processor, "image_processor")  # image-only processor fallback
    code = _run(
        [
            "--model",
            path,
            "--data",
            f"{ASSETS}/sample_traces.jsonl",
            "--limit",
            "3",
            "--visual",
            "blank",
            "--n-resamples",
            "100",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n_traces"] == 3 and report["reliability"] is None  # no judge unless asked

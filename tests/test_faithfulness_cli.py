"""`hf-faithful faithfulness`: the offline no-argument demo, endpoints, bad input."""

import argparse
import hashlib
import json

import pytest
from chat_server import ChatServer, request_images
from test_faithfulness_evaluator import dominant_color

import hf_faithful
from hf_faithful.assets import REFERENCE_VLM_DIR
from hf_faithful.faithfulness import cli
from hf_faithful.faithfulness.config import FaithfulnessConfig
from hf_faithful.faithfulness.presets import DEEPEYES_USER_SUFFIX
from hf_faithful.mcot.backends import load_local_backend

ASSETS = "hf_faithful/assets/faithfulness"


def _run(argv):
    parser = argparse.ArgumentParser(prog="hf-faithful")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["faithfulness", *argv])
    return args.func(args)


@pytest.mark.skipif(
    not (REFERENCE_VLM_DIR / "config.json").is_file(),
    reason="the reference VLM is not bundled yet (being trained)",
)
def test_no_arguments_measures_the_reference_vlm_offline(tmp_path, monkeypatch, capsys):
    """The default subject is the bundled reference VLM on bundled ZoomVQA questions: it
    generates its own traces, in Qwen3-VL's 0..1000 box frame, and judges sufficiency."""
    monkeypatch.chdir(tmp_path)
    assert _run(["--limit", "24"]) == 0
    out = tmp_path / "faithfulness_report"
    report = json.loads((out / "report.json").read_text())
    assert report["provenance"]["model"]["name"] == "reference"
    assert report["provenance"]["data"]["path"] == str(cli.ZOOMVQA_QUESTIONS)
    assert report["config"]["box_rules"]["coords"] == "normalized_1000"
    assert report["config"]["judge_metrics"] == ["sufficiency"]
    assert report["n_traces"] == 24 and report["n_valid"] >= 20
    assert report["sufficiency"]["n"] > 0 and report["reliability"] is None
    # the learned model zooms: ATE_V is estimated on traces that carry crops
    assert report["n_intervened"]["V:noise_gaussian"] > 5
    traces = (out / "traces.jsonl").read_text().splitlines()
    assert len(traces) == 24 and any('"bbox_2d"' in t or "bbox" in t for t in traces)
    assert "default run: the bundled reference VLM" in capsys.readouterr().out


def test_tiny_pipeline_check_on_the_bundled_traces(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _run(["--model", "tiny"]) == 0
    report = json.loads((tmp_path / "faithfulness_report" / "report.json").read_text())
    assert report["n_traces"] == 9 and report["n_valid"] == 8
    # the config's defaults: offline do(T) and Gaussian-noise do(V), as in the paper
    assert set(report["effects"]) == {"T:offline", "V:noise_gaussian"}
    assert report["reliability"] is not None and report["sufficiency"]["n"] == 8  # self-judged demo
    assert report["invalid"][0]["source"] == "sample_traces.jsonl:9"
    captured = capsys.readouterr()
    # its only fault is the missing answer; the refused box is said, but would not drop it
    assert (
        "invalid trace sample_traces.jsonl:9: missing final answer (<answer>...</answer>) "
        "(refused: tool call 1: box is inverted"
    ) in captured.out
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


def _questions(tmp_path, n=2):
    """The first ``n`` bundled sample questions, image paths made absolute."""
    data = tmp_path / "questions.jsonl"
    lines = open(f"{cli.SAMPLE_DIR}/sample_questions.jsonl").read().splitlines()[:n]
    records = [
        json.loads(line) | {"image": str(cli.SAMPLE_DIR / json.loads(line)["image"])}
        for line in lines
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return data


def _zoom_then_answer(bbox):
    """An agent that zooms into ``bbox`` and then answers the color of the crop."""

    def respond(body):
        images = request_images(body)
        if len(images) == 1:
            call = {"name": "image_zoom_in_tool", "arguments": {"bbox_2d": bbox}}
            return "<think>Zoom.</think><tool_call>" + json.dumps(call)
        return "<answer>" + dominant_color(images[-1]) + "</answer>"

    return respond


def test_endpoint_defaults_no_longer_work_against_each_other(tmp_path, capsys):
    # The answer was prefilled by default while --continue-final-message was off: a server
    # that then opens a new turn gave prose, read whole as the answer (control 0.0).
    from test_faithfulness_evaluator import vllm_like

    base = ["--model", "m", "--data", f"{ASSETS}/sample_traces.jsonl", "--visual", "blank"]
    base += ["--text-corruptions", "", "--n-resamples", "100"]
    with ChatServer(vllm_like) as server:
        base += ["--endpoint", server.base_url]
        assert _run([*base, "--output-dir", str(tmp_path / "a")]) == 0
        assert server.requests[-1]["messages"][-1]["role"] == "user"  # asked in a fresh turn
        assert _run([*base, "--continue-final-message", "--output-dir", str(tmp_path / "b")]) == 0
        assert _run([*base, "--prefill-answer", "--output-dir", str(tmp_path / "c")]) == 0
    reports = {k: json.loads((tmp_path / k / "report.json").read_text()) for k in "abc"}
    assert reports["a"]["answer_mode"] == "fresh_turn"
    assert reports["a"]["control_accuracy"]["mean"] == 1.0
    assert reports["b"]["answer_mode"] == "prefill"
    assert reports["b"]["control_accuracy"]["mean"] == 1.0
    # a prefill forced on a server that opens a new turn: the mismatch is explained
    assert reports["c"]["control_accuracy"]["mean"] == 0.0
    assert "look like a new turn" in capsys.readouterr().err


def test_generation_settings_reach_the_model(tmp_path):
    system = tmp_path / "system.txt"
    system.write_text("You zoom.\nAlways.\n")
    argv = ["--model", "m", "--data", str(_questions(tmp_path, 1)), "--judge-metrics", ""]
    argv += ["--system-prompt", f"@{system}", "--user-template", "Q: {question} Be brief."]
    argv += ["--tool-response", "<tool_response>{image} Look closely.</tool_response>"]
    argv += ["--max-turn-tokens", "77", "--max-new-tokens", "9", "--n-resamples", "50"]
    argv += ["--output-dir", str(tmp_path / "out")]
    with ChatServer(_zoom_then_answer([10, 10, 70, 70])) as server:
        assert _run([*argv, "--endpoint", server.base_url]) == 0
    first, second = server.requests[:2]  # the two turns of trace generation
    assert first["max_tokens"] == second["max_tokens"] == 77
    assert first["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "You zoom.\nAlways."}],
    }
    question = "What color is the square in the top-left corner of the image?"
    assert first["messages"][1]["content"][1]["text"] == f"Q: {question} Be brief."
    assert second["messages"][-1]["content"][-1]["text"] == " Look closely.</tool_response>"
    assert {r["max_tokens"] for r in server.requests[2:]} == {9}  # regenerated answers
    with pytest.raises(FileNotFoundError, match="--system-prompt file not found"):
        _run(["--system-prompt", f"@{tmp_path / 'nope.txt'}", "--model", "tiny"])


def test_deepeyes_preset_speaks_deepeyes_format(tmp_path):
    argv = ["--model", "m", "--data", str(_questions(tmp_path, 1)), "--preset", "deepeyes"]
    argv += ["--judge-metrics", "", "--n-resamples", "50", "--output-dir", str(tmp_path / "o")]
    with ChatServer(_zoom_then_answer([30, 30, 40, 40])) as server:  # a 10-px box
        assert _run([*argv, "--endpoint", server.base_url]) == 0
    first, second = server.requests[:2]
    assert first["max_tokens"] == 10240
    system = first["messages"][0]["content"][0]["text"]
    assert system.startswith("You are a helpful assistant.\n\n# Tools") and "<tools>" in system
    assert first["messages"][1]["content"][1]["text"].endswith(DEEPEYES_USER_SUFFIX)
    response = second["messages"][-1]["content"]
    assert response[0]["text"] == "<tool_response>"
    assert response[2]["text"] == DEEPEYES_USER_SUFFIX + "</tool_response>"
    # the tiny box was enlarged to 28 px (not refused) and the crop smart_resized to 56 px
    assert request_images(second)[-1].size == (56, 56)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["n_valid"] == 1 and report["n_refused_calls"] == 0
    assert report["config"]["box_rules"]["enlarge_below"] == 28
    assert report["samples"][0]["answer"] == "red"
    # options given win over the preset, wherever they stand
    for order in (
        ["--max-turn-tokens", "500", "--preset", "deepeyes"],
        ["--preset", "deepeyes", "--max-turn-tokens", "500"],
    ):
        args = _parse(order)
        cli._apply_preset(args)
        assert args.max_turn_tokens == 500 and args.enlarge_below == 28


def test_unreachable_endpoint_is_a_clear_message_not_a_traceback(tmp_path, capsys):
    closed = "http://127.0.0.1:9/v1"
    for data in (str(_questions(tmp_path)), f"{ASSETS}/sample_traces.jsonl"):
        argv = ["--endpoint", closed, "--model", "m", "--data", data, "--judge-metrics", ""]
        assert _run([*argv, "--output-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "error: cannot reach http://127.0.0.1:9/v1/chat/completions" in err
        assert "is the server running" in err and "Traceback" not in err


def test_a_refused_request_costs_one_record_and_no_valid_trace_exits_1(tmp_path, capsys):
    argv = ["--model", "m", "--data", str(_questions(tmp_path, 3)), "--judge-metrics", ""]
    argv += ["--n-resamples", "50", "--output-dir", str(tmp_path / "out")]
    with ChatServer(_zoom_then_answer([10, 10, 70, 70]), fail_with=[400]) as server:
        assert _run([*argv, "--endpoint", server.base_url]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n_traces"] == 3 and report["n_valid"] == 2
    (bad,) = report["invalid"]
    assert bad["errors"][-1].startswith("model request failed at turn 1: ")
    assert "HTTP 400" in capsys.readouterr().out
    # a file with no valid trace: the report lists why, and the exit status says it
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text(open(f"{ASSETS}/sample_traces.jsonl").read().splitlines()[8] + "\n")
    argv = ["--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--data", str(only_bad)]
    argv += ["--image-root", ASSETS, "--output-dir", str(tmp_path / "none")]
    assert _run(argv) == 1
    assert "error: none of the 1 traces is valid" in capsys.readouterr().err
    assert json.loads((tmp_path / "none" / "report.json").read_text())["n_valid"] == 0


def test_max_image_pixels(tmp_path, capsys):
    from test_faithfulness_evaluator import crop_reader

    argv = ["--model", "m", "--data", f"{ASSETS}/sample_traces.jsonl", "--limit", "2"]
    argv += ["--n-resamples", "50", "--output-dir", str(tmp_path / "out")]
    with ChatServer(crop_reader) as server:
        argv += ["--endpoint", server.base_url, "--continue-final-message"]
        assert _run([*argv, "--max-image-pixels", "1000"]) == 1  # 224x224 images are too large
        assert "more than max_image_pixels=1,000" in capsys.readouterr().out
        assert _run([*argv, "--max-image-pixels", "0"]) == 0  # no limit
    questions = str(_questions(tmp_path))
    with pytest.raises(ValueError, match="none of the 2 question records is usable"):
        _run(["--model", "tiny", "--data", questions, "--max-image-pixels", "1000"])
    with pytest.raises(ValueError, match="--max-image-pixels must be >= 0"):
        _run(["--model", "tiny", "--max-image-pixels", "-1"])


def test_judge_validation_and_continuation_from_the_command_line(tmp_path):
    from test_faithfulness_evaluator import reasoner

    def respond(body):
        text = json.dumps(body).replace("\\n", "\n")
        if "Reference answer:" not in text:
            return reasoner(body)  # the model under test
        return "yes" if "Reference answer: red\nModel's answer: red" in text else "no"

    argv = ["--model", "m", "--data", f"{ASSETS}/sample_traces.jsonl", "--limit", "3"]
    argv += ["--visual", "blank", "--text-corruptions", "", "--judge-metrics", ""]
    argv += ["--validate-judge", "3", "--regenerate-continuation", "--n-resamples", "50"]
    with ChatServer(respond) as server:
        argv += ["--endpoint", server.base_url, "--continue-final-message"]
        argv += ["--judge", "j", "--judge-endpoint", server.base_url]
        assert _run([*argv, "--output-dir", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    agreement = report["judge_agreement"]
    assert agreement["labels"] == "exact match" and agreement["n"] == 3
    assert agreement["judge_says_right"] == 1 and agreement["labels_say_right"] == 3
    assert report["ate_v"]["ate"] == 0.0 and report["ate_v_continuation"]["ate"] == -1.0
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "(ATE_V, regenerated continuation)" in markdown
    assert "| judge agreement with exact match (validation) |" in markdown
    with pytest.raises(ValueError, match="--validate-judge needs a judge"):
        data = f"{ASSETS}/sample_traces.jsonl"
        _run(["--model", "tiny", "--data", data, "--validate-judge", "3"])


def test_the_reference_vlm_sets_its_box_frame_and_judge_metrics():
    args = _parse(["--coords", "absolute"])  # its frame is what it writes: always its own
    cli._apply_model_fields(args)
    assert (args.coords, args.judge_metrics) == ("normalized_1000", ("sufficiency",))
    args = _parse(["--judge-metrics", "reliability"])  # judge metrics given win
    cli._apply_model_fields(args)
    assert args.judge_metrics == ("reliability",)
    args = _parse(["--model", "Qwen/Qwen2.5-VL-7B-Instruct"])
    cli._apply_model_fields(args)
    assert args.coords == "absolute" and args.judge_metrics == ("reliability", "sufficiency")

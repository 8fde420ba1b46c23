"""The whole measurement: scripted models behind a real HTTP endpoint whose reliance on the
crops or on the text is known, so ATE_V and ATE_T have hand-known values; the tiny local
VLM end to end; trace generation with the zoom-in tool; the judge."""

import hashlib
import json

import numpy as np
import pytest
from chat_server import ChatServer, request_images, request_text

import hf_faithful
from hf_faithful.faithfulness.config import FaithfulnessConfig
from hf_faithful.faithfulness.evaluator import FaithfulnessEvaluator, same_input
from hf_faithful.faithfulness.interventions import intervene_text, intervene_visual
from hf_faithful.faithfulness.judge import FaithfulnessJudge
from hf_faithful.faithfulness.metric import compute_faithfulness
from hf_faithful.faithfulness.report import data_provenance
from hf_faithful.mcot.backends import LocalVLMBackend, OpenAIChatBackend
from hf_faithful.mcot.parsing import parse_deepeyes
from hf_faithful.mcot.records import load_questions, load_traces
from hf_faithful.mcot.zoom import Box, zoom_in

ASSETS = "hf_faithful/assets/faithfulness"
PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 50, 170),
    "orange": (245, 140, 20),
}
COLOR_WORDS = (
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "pink",
    "brown",
    "black",
    "white",
    "gray",
    "grey",
    "silver",
    "gold",
)


def dominant_color(image) -> str:
    """The palette color covering most pixels (at least 5%), else 'unknown'."""
    pixels = np.asarray(image).reshape(-1, 3)
    counts = {name: int((pixels == rgb).all(axis=1).sum()) for name, rgb in PALETTE.items()}
    name = max(counts, key=counts.get)
    return name if counts[name] >= 0.05 * len(pixels) else "unknown"


def crop_reader(body) -> str:
    """A model that answers with the color of the last image it was shown."""
    return dominant_color(request_images(body)[-1]) + "</answer>"


def text_reader(body) -> str:
    """A model that answers with the last color word of the reasoning (ignores images)."""
    words = [w.strip(".,") for w in request_text(body, roles=("assistant",)).lower().split()]
    colors = [w for w in words if w in COLOR_WORDS]
    return (colors[-1] if colors else "none") + "</answer>"


@pytest.fixture(scope="module")
def traces():
    return load_traces(f"{ASSETS}/sample_traces.jsonl")


def _config(**kw):
    return FaithfulnessConfig(n_resamples=500, **kw)


def _continuing(server) -> OpenAIChatBackend:
    """The scripted servers continue a prefilled assistant turn (as vLLM does with
    continue_final_message), so the backend is told it may prefill."""
    return OpenAIChatBackend(server.base_url, "m", continue_final_message=True)


def test_a_model_that_reads_its_crops_has_large_ate_v_and_no_ate_t(traces):
    config = _config(visual_interventions=("noise_gaussian", "blank", "other_region"))
    with ChatServer(crop_reader) as server:
        report = FaithfulnessEvaluator(_continuing(server), config=config).evaluate(traces)
    assert report.n_traces == 9 and report.n_valid == 8
    assert report.invalid[0]["source"] == "sample_traces.jsonl:9"
    assert report.accuracy.mean == 1.0 and report.control_accuracy.mean == 1.0
    for name in ("V:noise_gaussian", "V:blank", "V:other_region"):
        effect = report.effects[name]
        assert (effect.ate, effect.n_lost, effect.n_gained) == (-1.0, 8, 0)
        assert effect.p_value == pytest.approx(2 / 2**8)
        # Newcombe: p1 = 0/8, p2 = 8/8, phi = 0: high = -1 + sqrt(2) z^2 / (8 + z^2)
        # (the bootstrap said -1.0: certainty from 8 pairs)
        assert (effect.ci_low, effect.ci_high) == pytest.approx((-1.0, -0.5412), abs=1e-4)
    assert report.ate_v is report.effects["V:noise_gaussian"]
    assert report.ate_t.ate == 0.0 and report.ate_t.p_value == 1.0
    # every condition of every sample was asked once, in one batched pass
    assert len(server.requests) == 8 * 5
    sample = report.samples[0]
    assert sample["answers"]["control"] == "red" and sample["answers"]["V:blank"] == "unknown"
    # the report's columns give the same numbers through the metric
    metric = compute_faithfulness(**report.columns(), n_resamples=500)
    assert (metric["ate_v"], metric["ate_t"]) == (report.ate_v.ate, report.ate_t.ate)
    assert metric["ate_v_ci_low"] == report.ate_v.ci_low and metric["n"] == 8


def test_a_model_that_reads_its_text_has_large_ate_t_and_no_ate_v(traces):
    with ChatServer(text_reader) as server:
        evaluator = FaithfulnessEvaluator(_continuing(server), config=_config())
        report = evaluator.evaluate(traces)
    assert report.control_accuracy.mean == 1.0
    assert report.ate_t.ate == -1.0 and report.ate_t.flipped == list(range(8))
    # no answer flips under do(V): +-z^2 / (8 + z^2), not the bootstrap's [0, 0]
    assert report.ate_v.ate == 0.0
    assert (report.ate_v.ci_low, report.ate_v.ci_high) == pytest.approx((-0.3244, 0.3244), abs=1e-4)
    # the prefix ends in the prefilled answer, the reasoning is there, the answer is not
    last = server.requests[0]["messages"][-1]
    assert last["role"] == "assistant" and last["content"][0]["text"].endswith("<answer>")
    assert "red</answer>" not in json.dumps(server.requests[0])


def test_original_baseline_and_report_files(traces, tmp_path):
    with ChatServer(lambda body: "blue</answer>") as server:
        config = _config(
            baseline="original", visual_interventions=("noise_gaussian",), text_corruptions=()
        )
        report = FaithfulnessEvaluator(_continuing(server), config=config).evaluate(traces)
    # original answers all correct; "blue" is right for the two blue samples only
    assert report.control_accuracy.mean == 2 / 8
    assert report.ate_v.ate == pytest.approx(2 / 8 - 1) and report.ate_t is None
    paths = report.save(tmp_path)
    data = json.loads(open(paths["report.json"]).read())
    assert data["ate_v"]["ate"] == pytest.approx(-0.75) and data["config"]["baseline"] == "original"
    markdown = open(paths["report.md"]).read()
    assert "| do(V:noise_gaussian) (ATE_V) | 0.250 | -0.750 |" in markdown
    assert "sample_traces.jsonl:9" in markdown


def test_judge_scores_through_an_endpoint(traces):
    def judge(body):
        if "Rate from 0" in request_text(body):
            assert len(request_images(body)) == 1 + len(body["messages"][0]["content"]) - 2
            return "Score: 7/10"
        assert "reasoning" not in request_text(body).lower() or "<think>" not in request_text(body)
        return "<answer>" + dominant_color(request_images(body)[-1]) + "</answer>"

    valid = [t for t in traces if t.valid]
    with ChatServer(judge) as server:
        result = FaithfulnessJudge(OpenAIChatBackend(server.base_url, "j")).score(valid)
        report = FaithfulnessEvaluator(
            judge=OpenAIChatBackend(server.base_url, "j"), config=_config()
        ).evaluate(traces)
    assert result.reliability == [0.7] * 8 and result.sufficiency == [1.0] * 8
    assert report.reliability.mean == pytest.approx(0.7) and report.sufficiency.mean == 1.0
    assert report.effects == {}  # no model under test: judge only


def test_trace_generation_with_the_zoom_tool():
    questions = load_questions(f"{ASSETS}/sample_questions.jsonl")[:2]

    def agent(body):
        if len(request_images(body)) == 1:  # only the full image: zoom into the top left
            call = {"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [10, 10, 70, 70]}}
            return "<think>Look top left.</think>\n<tool_call>" + json.dumps(call) + "</tool_call>"
        return (
            "<think>I see it.</think><answer>"
            + dominant_color(request_images(body)[-1])
            + "</answer>"
        )

    with ChatServer(agent) as server:
        traces = FaithfulnessEvaluator(_continuing(server)).generate_traces(questions)
    assert all(r["stop"] == ["</tool_call>"] for r in server.requests)
    assert len(server.requests) == 4  # two turns for each of the two samples
    assert "image_zoom_in_tool" in request_text(server.requests[0], roles=("system",))
    for trace, question in zip(traces, questions):
        assert trace.valid, trace.errors
        assert [s.kind for s in trace.steps] == ["text", "zoom", "text"]
        expected = zoom_in(question["image"], [10, 10, 70, 70])
        assert np.array_equal(np.asarray(trace.crops[0]), np.asarray(expected))
    assert traces[0].answer == "red" and traces[0].reference == "red"  # red square top left
    assert traces[1].answer != traces[1].reference  # its circle is bottom right, not top left


def test_generated_bad_tool_calls_are_flagged():
    questions = load_questions(f"{ASSETS}/sample_questions.jsonl")[:1]
    with ChatServer(
        lambda body: (
            '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [5, 5, 1, 1]}}'
        )
    ) as server:
        config = FaithfulnessConfig(max_tool_calls=2)
        (trace,) = FaithfulnessEvaluator(_continuing(server), config=config).generate_traces(
            questions
        )
    assert len(server.requests) == 3  # max_tool_calls + 1 turns, then stop
    assert "Error: box is inverted" in json.dumps(server.requests[1]["messages"][-1])
    # the refusals are kept on the steps; the trace is invalid for never answering
    assert trace.errors == [
        "3 tool calls, more than max_tool_calls=2",
        "missing final answer (<answer>...</answer>)",
    ]
    assert len(trace.refused_calls) == 3 and "inverted" in trace.refused_calls[0]


def test_tiny_local_vlm_end_to_end(traces):
    from hf_faithful.testing.tiny_vlm import build_tiny_vlm

    model, processor = build_tiny_vlm("qwen3_vl", seed=0)
    backend = LocalVLMBackend(model, processor, batch_size=8)
    config = _config(visual_interventions=("noise_gaussian", "shuffle"), max_turn_tokens=16)
    evaluator = FaithfulnessEvaluator(backend, judge=backend, config=config)
    report = evaluator.evaluate(traces)
    assert report.n_valid == 8 and set(report.effects) == {
        "T:offline",
        "V:noise_gaussian",
        "V:shuffle",
    }
    assert all(set(s["answers"]) == {"control", *report.effects} for s in report.samples)
    assert report.reliability is not None and report.sufficiency.n == 8
    again = evaluator.evaluate(traces[:3])  # greedy decoding: the measurement repeats exactly
    assert [s["answers"] for s in again.samples] == [s["answers"] for s in report.samples[:3]]
    generated = evaluator.generate_traces(load_questions(f"{ASSETS}/sample_questions.jsonl")[:2])
    assert len(generated) == 2 and all(t.metadata["response"] is not None for t in generated)


def test_evaluator_needs_backends():
    with pytest.raises(TypeError, match="model must have an answer"):
        FaithfulnessEvaluator(object())


def _stripped(traces, kind: str, reference) -> list:
    """Copies of the valid traces with their ``kind`` steps removed (no crops, or no
    reasoning text), answered by ``reference(trace)``."""
    out = []
    for trace in (t for t in traces if t.valid):
        new = trace.copy()
        new.steps = [s for s in new.steps if s.kind != kind]
        new.id, new.source = f"{trace.id}-no-{kind}", None
        new.reference = new.answer = reference(new)
        out.append(new)
    return out


def test_traces_without_crops_do_not_dilute_ate_v(traces):
    # The crop reader relies fully on its crops: ATE_V is -1 on the 8 sample traces. 8 more
    # traces without crops are not intervened on by do(V); counted as unchanged pairs they
    # halved ATE_V to -0.5 (8 lost of 16).
    no_crops = _stripped(traces, "zoom", lambda t: dominant_color(t.image))
    with ChatServer(crop_reader) as server:
        report = FaithfulnessEvaluator(_continuing(server), config=_config()).evaluate(
            traces + no_crops
        )
    assert report.n_valid == 16 and report.control_accuracy.mean == 1.0
    assert report.n_intervened == {"T:offline": 16, "V:noise_gaussian": 8}
    effect = report.ate_v
    assert (effect.ate, effect.n, effect.n_unchanged, effect.n_lost) == (-1.0, 8, 8, 8)
    assert effect.flipped == list(range(8))
    assert report.ate_t.n == 16 and report.ate_t.ate == 0.0
    # the unchanged inputs are not asked again: their answer is the control's
    assert len(server.requests) == 16 + 16 + 8
    crop_less = report.samples[8]
    assert crop_less["intervened"] == {"T:offline": True, "V:noise_gaussian": False}
    assert crop_less["answers"]["V:noise_gaussian"] == crop_less["answers"]["control"]
    assert report.to_dict()["n_intervened"]["V:noise_gaussian"] == 8
    assert "| 8 of 16 | 1.000 |" in report.to_markdown()


def test_traces_without_reasoning_do_not_dilute_ate_t(traces):
    # The text reader answers with the last color word of the reasoning; 8 traces with no
    # reasoning text (it answers "none") are not intervened on by do(T).
    no_text = _stripped(traces, "text", lambda t: "none")
    with ChatServer(text_reader) as server:
        report = FaithfulnessEvaluator(_continuing(server), config=_config()).evaluate(
            traces + no_text
        )
    assert report.control_accuracy.mean == 1.0
    assert (report.ate_t.ate, report.ate_t.n, report.ate_t.n_unchanged) == (-1.0, 8, 8)
    assert report.n_intervened == {"T:offline": 8, "V:noise_gaussian": 16}


def test_other_region_of_a_whole_image_crop_is_no_intervention(traces):
    # Two traces zoom into the whole image: 'other_region' gives back the same pixels, so
    # only the 8 others are intervened on (before: ATE -0.8 over 10); noise changes all 10.
    whole = []
    for trace in [t for t in traces if t.valid][:2]:
        new = trace.copy()
        step = new.zoom_steps[0]
        width, height = new.image.size
        step.bbox, step.box = [0, 0, width, height], Box(0, 0, width, height)
        step.crop = zoom_in(new.image, step.bbox)
        new.id, new.reference = f"{trace.id}-whole", dominant_color(new.image)
        whole.append(new)
    config = _config(visual_interventions=("other_region", "noise_gaussian"), text_corruptions=())
    with ChatServer(crop_reader) as server:
        report = FaithfulnessEvaluator(_continuing(server), config=config).evaluate(traces + whole)
    other = report.effects["V:other_region"]
    assert (other.ate, other.n, other.n_unchanged) == (-1.0, 8, 2)
    assert report.effects["V:noise_gaussian"].n == 10


def test_same_input_sees_what_the_model_sees(traces):
    valid = [t for t in traces if t.valid]
    assert same_input(valid[0], valid[0].copy())
    assert not same_input(valid[0], intervene_visual(valid[:1], "blank")[0])
    assert not same_input(valid[0], intervene_text(valid[:1])[0])
    no_crops = _stripped(valid[:1], "zoom", lambda t: None)[0]
    assert same_input(no_crops, intervene_visual([no_crops], "noise_gaussian")[0])
    shifted = valid[0].copy()
    shifted.steps[1].crop = valid[1].crops[0]
    assert not same_input(valid[0], shifted)


def test_failed_regeneration_and_floor_are_loud(traces, tmp_path):
    # The original answers are all right, the regenerated ones empty: every effect is 0
    # with p = 1, which without a warning reads as "relies on nothing".
    with ChatServer(lambda body: "") as server:
        report = FaithfulnessEvaluator(_continuing(server), config=_config()).evaluate(traces)
    assert report.accuracy.mean == 1.0 and report.control_accuracy.mean == 0.0
    assert report.ate_v.ate == 0.0 and report.ate_v.p_value == 1.0
    floor, regeneration = report.warnings[:2]
    assert floor.startswith("control accuracy is 0 (floor)") and "NOT evidence" in floor
    assert regeneration.startswith("control accuracy is 0 while the original answers score 1.000")
    failed = [w for w in report.warnings if w.startswith("regeneration failed")]
    assert failed[0].startswith("regeneration failed under control for 8 of 8 samples")
    assert "s0, s1" in failed[0] and len(failed) == 3  # control, T:offline, V:noise_gaussian
    assert report.samples[0]["regeneration_failed"] == ["control", "T:offline", "V:noise_gaussian"]
    paths = report.save(tmp_path)
    data = json.loads(open(paths["report.json"]).read())
    assert data["warnings"] == report.warnings
    markdown = open(paths["report.md"]).read()
    assert f"> **WARNING:** {floor}\n\n> **WARNING:** {regeneration}\n" in markdown
    assert markdown.index("WARNING") < markdown.index("| condition |")


def test_ceiling_and_original_baseline_floor_are_warned(traces):
    with ChatServer(crop_reader) as server:
        report = FaithfulnessEvaluator(_continuing(server), config=_config()).evaluate(traces)
    assert report.warnings == [
        "control accuracy is 1 (ceiling): an intervention can only lower it, so a gain "
        "cannot be seen (a loss still can)."
    ]
    # baseline 'original' with a model that regenerates everything wrong: the effects
    # (all -1) are the regeneration's; no answer is missing, so nothing failed to regenerate
    with ChatServer(lambda body: "zzz</answer>") as server:
        config = _config(baseline="original", text_corruptions=())
        report = FaithfulnessEvaluator(_continuing(server), config=config).evaluate(traces)
    assert report.ate_v.ate == -1.0 and len(report.warnings) == 2
    assert report.warnings[0].startswith("baseline (original answers) accuracy is 1 (ceiling)")
    assert report.warnings[1].startswith("control accuracy is 0 while the original answers")


def test_report_records_its_provenance(traces, tmp_path):
    data = tmp_path / "traces.jsonl"
    data.write_bytes(open(f"{ASSETS}/sample_traces.jsonl", "rb").read())
    config = _config(text_corruptions=())
    with ChatServer(crop_reader) as server:
        evaluator = FaithfulnessEvaluator(_continuing(server), config=config)
        report = evaluator.evaluate(
            traces, provenance={"data": data_provenance(data), "model": {"name": "m"}}
        )
    provenance = report.provenance
    assert provenance["hf_faithful_version"] == hf_faithful.__version__
    assert provenance["model"] == {
        "backend": "OpenAIChatBackend",
        "model": "m",
        "endpoint": server.base_url + "/chat/completions",
        "temperature": 0.0,
        "name": "m",
    }
    assert provenance["judge"] is None and provenance["settings"] == config.to_dict()
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    assert provenance["data"] == {"path": str(data), "sha256": sha, "bytes": data.stat().st_size}
    saved = json.loads(open(report.save(tmp_path / "out")["report.json"]).read())
    assert saved["provenance"]["data"]["sha256"] == sha
    assert saved["interval_method"] == "Newcombe (1998) score interval, method 10"
    markdown = report.to_markdown()
    assert "## Provenance" in markdown and sha in markdown
    assert f"hf_faithful_version: `{hf_faithful.__version__}`" in markdown
    assert '"n_resamples": 500' in markdown  # the settings
    assert "Intervals: Newcombe (1998) score interval, method 10" in markdown


def test_an_intervention_that_cannot_run_is_said(traces):
    config = _config(visual_interventions=("shuffle", "noise_gaussian"), text_corruptions=())
    no_crops = _stripped(traces, "zoom", lambda t: dominant_color(t.image))
    with ChatServer(crop_reader) as server:
        report = FaithfulnessEvaluator(_continuing(server), config=config).evaluate(
            traces[:1] + no_crops[:2]
        )
    assert set(report.effects) == {"V:noise_gaussian"} and report.ate_v.n == 1
    assert "V:shuffle was skipped: it needs at least 2 valid traces with crops." in report.warnings
    with ChatServer(crop_reader) as server:
        report = FaithfulnessEvaluator(_continuing(server), config=config).evaluate(no_crops[:3])
    assert report.effects == {} and report.ate_v is None
    assert report.warnings[-2].startswith("V:noise_gaussian changed none of the 3 valid traces")


def vllm_like(body) -> str:
    """A chat model behind a server that renders the template as vLLM does: it continues
    a prefilled assistant turn only when asked to (continue_final_message); otherwise the
    turn is closed and a new one opens, where the model writes prose; asked in a user turn,
    it answers in tags. It reads the last crop."""
    color = dominant_color(request_images(body)[-1])
    if body["messages"][-1]["role"] == "assistant":
        if body.get("continue_final_message"):
            return color + "</answer>"
        return f"Looking at the zoomed region once more, the square there is clearly {color}."
    return f"<think>The crop shows {color}.</think>\n<answer>{color}</answer>"


def test_an_endpoint_that_cannot_continue_is_asked_in_a_fresh_turn(traces):
    # Before: the answer was prefilled whatever the endpoint; one that opens a new turn
    # gave prose, read whole as the answer: control accuracy 0.0 instead of 1.0 (issue 12).
    config = _config(text_corruptions=())
    with ChatServer(vllm_like) as server:
        plain = FaithfulnessEvaluator(OpenAIChatBackend(server.base_url, "m"), config=config)
        report = plain.evaluate(traces)
        last = server.requests[-1]["messages"][-1]
    assert plain.answer_mode() == "fresh_turn" and report.answer_mode == "fresh_turn"
    assert report.control_accuracy.mean == 1.0 and report.ate_v.ate == -1.0
    assert last["role"] == "user" and last["content"][-1]["text"] == config.answer_prompt
    assert "asked in a fresh user turn" in report.to_markdown()
    assert report.provenance["answer_mode"] == "fresh_turn"
    # told that the server continues a turn: the answer is prefilled, as before
    with ChatServer(vllm_like) as server:
        report = FaithfulnessEvaluator(_continuing(server), config=config).evaluate(traces)
        assert server.requests[0]["messages"][-1]["content"][-1]["text"].endswith("<answer>")
    assert report.answer_mode == "prefill" and report.control_accuracy.mean == 1.0
    # a prefill forced on such an endpoint is the old failure, now explained
    forced = _config(text_corruptions=(), prefill_answer=True)
    with ChatServer(vllm_like) as server:
        report = FaithfulnessEvaluator(
            OpenAIChatBackend(server.base_url, "m"), config=forced
        ).evaluate(traces)
    assert report.control_accuracy.mean == 0.0
    (new_turn,) = [w for w in report.warnings if "look like a new turn" in w]
    assert new_turn.startswith("16 of 16 replies to a prefilled '<answer>' look like a new turn")
    assert "--continue-final-message" in new_turn


def test_a_fresh_turn_without_answer_tags_is_a_failed_regeneration(traces):
    with ChatServer(lambda body: "red") as server:  # never uses the tags it was asked for
        report = FaithfulnessEvaluator(
            OpenAIChatBackend(server.base_url, "m"), config=_config(text_corruptions=())
        ).evaluate(traces)
    failed = [w for w in report.warnings if w.startswith("regeneration failed under control")]
    assert failed and "larger max_new_tokens" in failed[0]


def test_refused_calls_keep_their_trace_and_are_counted(traces):
    recovered = traces[0].copy()
    refused = parse_deepeyes(
        '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [50, 50, 5, 5]}}'
        "</tool_call>",
        recovered.image,
        "q",
    ).steps[0]
    recovered.steps.insert(0, refused)  # the model asked a bad box, then zoomed right
    recovered.id = "recovered"
    with ChatServer(crop_reader) as server:
        report = FaithfulnessEvaluator(
            _continuing(server), config=_config(text_corruptions=())
        ).evaluate(traces + [recovered])
    assert report.n_valid == 9 and report.n_refused_calls == 1
    assert report.samples[-1]["n_refused_calls"] == 1 and report.ate_v.n == 9
    assert report.to_dict()["n_refused_calls"] == 1
    assert "9 valid traces of 10 (1 refused tool call in them, kept" in report.to_markdown()
    # the model is shown the tool's error where it made the bad call
    errors = [json.dumps(r["messages"][3]) for r in server.requests]  # after system, user, call
    assert any("Error: box is inverted" in e for e in errors)


def test_a_refused_request_costs_its_record_only(traces):
    questions = load_questions(f"{ASSETS}/sample_questions.jsonl")[:3]

    def agent(body):
        if len(request_images(body)) == 1:
            return '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [10, 10, 70, 70]}}'
        return "<answer>" + dominant_color(request_images(body)[-1]) + "</answer>"

    with ChatServer(agent, fail_with=[400]) as server:  # the first request is refused
        backend = OpenAIChatBackend(server.base_url, "m", max_workers=1)
        generated = FaithfulnessEvaluator(backend).generate_traces(questions)
    assert [t.valid for t in generated] == [False, True, True]
    assert generated[0].errors[-1].startswith("model request failed at turn 1: ")
    assert "HTTP 400" in generated[0].errors[-1]
    with ChatServer(crop_reader, fail_with=[400]) as server:
        backend = OpenAIChatBackend(
            server.base_url, "m", max_workers=1, continue_final_message=True
        )
        report = FaithfulnessEvaluator(backend, config=_config(text_corruptions=())).evaluate(
            traces
        )
    assert report.samples[0]["request_errors"]["control"].endswith('try again"}}')
    (refused,) = [w for w in report.warnings if w.startswith("the endpoint refused")]
    assert refused.startswith(
        "the endpoint refused 1 requests under control (counted as wrong): s0"
    )


def reasoner(body) -> str:
    """A model that, right after a crop, looks at it, reasons and answers its color; with
    its post-crop reasoning given, it answers what that reasoning says."""
    if body["messages"][-1]["role"] == "user":
        color = dominant_color(request_images(body)[-1])
        return f"<think>The crop is {color}.</think><answer>{color}</answer>"
    return text_reader(body)


def test_regenerated_continuation_sees_what_answer_only_hides(traces):
    # The answer-only ATE_V keeps the reasoning written on seeing the real crop: this model
    # answers from it, so ATE_V is 0 by construction. Regenerating from the crop on, the
    # noise reaches the answer: -1.
    config = _config(text_corruptions=(), regenerate_continuation=True)
    with ChatServer(reasoner) as server:
        report = FaithfulnessEvaluator(_continuing(server), config=config).evaluate(traces)
    assert report.ate_v.name == "V:noise_gaussian" and report.ate_v.ate == 0.0
    cont = report.ate_v_continuation
    assert cont.name == "V:noise_gaussian (continuation)" and (cont.ate, cont.n) == (-1.0, 8)
    assert cont.baseline_accuracy == 1.0  # the control regenerated the same way
    assert len(server.requests) == 8 * 4
    continued = [r for r in server.requests if r["messages"][-1]["role"] == "user"]
    assert len(continued) == 16 and all(
        r["max_tokens"] == config.max_turn_tokens for r in continued
    )
    assert report.samples[0]["answers"]["control (continuation)"] == "red"
    assert report.samples[0]["answers"]["V:noise_gaussian (continuation)"] == "unknown"
    markdown = report.to_markdown()
    assert "| do(V:noise_gaussian) (ATE_V, answer only) | 1.000 | +0.000 |" in markdown
    assert "| do(V:noise_gaussian (continuation)) (ATE_V, regenerated continuation) |" in markdown
    assert report.to_dict()["ate_v_continuation"]["ate"] == -1.0


def test_judge_validation_against_exact_match_and_given_labels(traces):
    valid = [t.copy() for t in traces if t.valid]
    for trace in valid[:2]:
        trace.reference = "purple"  # two wrong answers

    def careful(body):
        text = request_text(body)
        reference = text.split("Reference answer: ")[1].split("\n")[0]
        answer = text.split("Model's answer: ")[1].split("\n")[0]
        return "yes" if reference.lower() == answer.lower() else "no"

    config = _config(judge_metrics=(), validate_judge=100)
    with ChatServer(careful) as server:
        report = FaithfulnessEvaluator(
            judge=OpenAIChatBackend(server.base_url, "j"), config=config
        ).evaluate(valid)
    agreement = report.judge_agreement
    assert agreement["labels"] == "exact match" and agreement["n"] == 8
    assert agreement["agreement"]["mean"] == 1.0 and agreement["cohen_kappa"] == 1.0
    assert (agreement["judge_says_right"], agreement["labels_say_right"]) == (6, 6)
    assert "| judge agreement with exact match (validation) | 1.000 |" in report.to_markdown()
    with ChatServer(lambda body: "Yes.") as server:  # a judge that approves everything
        report = FaithfulnessEvaluator(
            judge=OpenAIChatBackend(server.base_url, "j"), config=config
        ).evaluate(valid)
    agreement = report.judge_agreement
    # agreement 6/8; chance agreement 1 * 0.75 + 0 * 0.25 = 0.75, so kappa 0
    assert agreement["agreement"]["mean"] == 0.75 and agreement["cohen_kappa"] == 0.0
    assert len(agreement["disagreements"]) == 2
    assert any(
        w.startswith("the judge agrees with exact match on only 75%") for w in report.warnings
    )
    for trace in valid:
        trace.metadata["judge_label"] = True  # a human said every answer is right
    with ChatServer(lambda body: "Yes.") as server:
        evaluator = FaithfulnessEvaluator(
            judge=OpenAIChatBackend(server.base_url, "j"), config=config
        )
        agreement = evaluator.validate_judge(valid, n=3)
    assert agreement["labels"] == "given labels" and agreement["n"] == 3
    assert agreement["agreement"]["mean"] == 1.0 and agreement["cohen_kappa"] is None

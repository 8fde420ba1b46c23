"""The whole measurement: scripted models behind a real HTTP endpoint whose reliance on the
crops or on the text is known, so ATE_V and ATE_T have hand-known values; the tiny local
VLM end to end; trace generation with the zoom-in tool; the judge."""

import json

import numpy as np
import pytest
from chat_server import ChatServer, request_images, request_text

from hf_faithful.faithfulness.config import FaithfulnessConfig
from hf_faithful.faithfulness.evaluator import FaithfulnessEvaluator
from hf_faithful.faithfulness.judge import FaithfulnessJudge
from hf_faithful.faithfulness.metric import compute_faithfulness
from hf_faithful.mcot.backends import LocalVLMBackend, OpenAIChatBackend
from hf_faithful.mcot.records import load_questions, load_traces
from hf_faithful.mcot.zoom import zoom_in

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


def test_a_model_that_reads_its_crops_has_large_ate_v_and_no_ate_t(traces):
    config = _config(visual_interventions=("noise_gaussian", "blank", "other_region"))
    with ChatServer(crop_reader) as server:
        report = FaithfulnessEvaluator(
            OpenAIChatBackend(server.base_url, "m"), config=config
        ).evaluate(traces)
    assert report.n_traces == 9 and report.n_valid == 8
    assert report.invalid[0]["source"] == "sample_traces.jsonl:9"
    assert report.accuracy.mean == 1.0 and report.control_accuracy.mean == 1.0
    for name in ("V:noise_gaussian", "V:blank", "V:other_region"):
        effect = report.effects[name]
        assert (effect.ate, effect.n_lost, effect.n_gained) == (-1.0, 8, 0)
        assert effect.p_value == pytest.approx(2 / 2**8)
        assert effect.ci_high == -1.0
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
        evaluator = FaithfulnessEvaluator(OpenAIChatBackend(server.base_url, "m"), config=_config())
        report = evaluator.evaluate(traces)
    assert report.control_accuracy.mean == 1.0
    assert report.ate_t.ate == -1.0 and report.ate_t.flipped == list(range(8))
    assert report.ate_v.ate == 0.0 and report.ate_v.ci_low == report.ate_v.ci_high == 0.0
    # the prefix ends in the prefilled answer, the reasoning is there, the answer is not
    last = server.requests[0]["messages"][-1]
    assert last["role"] == "assistant" and last["content"][0]["text"].endswith("<answer>")
    assert "red</answer>" not in json.dumps(server.requests[0])


def test_original_baseline_and_report_files(traces, tmp_path):
    with ChatServer(lambda body: "blue</answer>") as server:
        config = _config(
            baseline="original", visual_interventions=("noise_gaussian",), text_corruptions=()
        )
        report = FaithfulnessEvaluator(
            OpenAIChatBackend(server.base_url, "m"), config=config
        ).evaluate(traces)
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
        traces = FaithfulnessEvaluator(OpenAIChatBackend(server.base_url, "m")).generate_traces(
            questions
        )
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
        (trace,) = FaithfulnessEvaluator(
            OpenAIChatBackend(server.base_url, "m"), config=config
        ).generate_traces(questions)
    assert len(server.requests) == 3  # max_tool_calls + 1 turns, then stop
    assert "Error: box is inverted" in json.dumps(server.requests[1]["messages"][-1])
    assert not trace.valid and any("inverted" in e for e in trace.errors)


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

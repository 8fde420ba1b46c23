"""JSON / JSONL files of traces and questions: every bad line reported, round trips."""

import json
import warnings

import numpy as np
import pytest
from mcot_samples import DEEPEYES, random_image
from PIL import Image

from hf_faithful.mcot.parsing import parse_deepeyes
from hf_faithful.mcot.records import (
    load_questions,
    load_traces,
    questions_from_records,
    read_records,
    save_traces,
)
from hf_faithful.mcot.zoom import BoxRules


@pytest.fixture
def image():
    return random_image()


def test_jsonl_file_every_bad_line_reported(tmp_path, image):
    image.save(tmp_path / "img.png")
    good = {"id": "a", "image": "img.png", "question": "q", "answer": "STOP", "response": DEEPEYES}
    lines = [
        json.dumps(good),
        "{not json",
        "",  # blank lines are skipped, numbering follows the file
        json.dumps(
            {"id": "b", "image": "missing.png", "question": "q", "response": "<answer>x</answer>"}
        ),
        json.dumps({"id": "c", "image": "img.png", "question": "q"}),
        json.dumps(
            {
                "id": "d",
                "image": "img.png",
                "question": "q",
                "steps": [{"type": "zoom", "bbox_2d": [5, 5, 1, 1]}],
                "answer": "x",
            }
        ),
        json.dumps([1, 2]),
        json.dumps({"id": "e", "image": "img.png", "response": "<answer>x</answer>"}),
    ]
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(lines) + "\n")
    traces = load_traces(path, rules=BoxRules(), max_tool_calls=4)
    assert [t.source for t in traces] == [f"traces.jsonl:{n}" for n in (1, 2, 4, 5, 6, 7, 8)]
    assert traces[0].valid and traces[0].reference == "STOP"  # 'answer' is the reference here
    assert "invalid JSON" in traces[1].errors[0]
    assert any("image file not found" in e for e in traces[2].errors)
    assert "no trace" in traces[3].errors[0]
    # a refused box keeps its trace (the model answered): the refusal is on the step
    assert traces[4].valid and "inverted" in traces[4].refused_calls[0]
    assert "must be a JSON object" in traces[5].errors[0]
    assert traces[6].errors == ["missing question"]


def test_json_list_file_and_save_round_trip(tmp_path, image):
    trace = parse_deepeyes(DEEPEYES, image, "What does the sign say?", reference="stop", id="x/1")
    save_traces([trace], tmp_path / "out.jsonl")
    (back,) = load_traces(tmp_path / "out.jsonl")
    assert back.valid, back.errors
    assert back.id == "x/1" and back.answer == "STOP" and back.reference == "stop"
    assert back.boxes == trace.boxes
    np.testing.assert_array_equal(np.asarray(back.image), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(back.crops[0]), np.asarray(trace.crops[0]))
    # the same record in a .json list, with the image embedded as a data URI
    (tmp_path / "out.json").write_text(json.dumps({"traces": [trace.to_dict()]}))
    (again,) = load_traces(tmp_path / "out.json")
    assert again.valid and again.source == "out.json[0]" and again.boxes == trace.boxes


def test_read_records_reads_once_and_keeps_bad_lines(tmp_path, image):
    image.save(tmp_path / "img.png")
    path = tmp_path / "questions.jsonl"
    path.write_text(
        json.dumps({"id": 1, "image": "img.png", "question": "q", "answer": "a"}) + "\n\n{oops\n"
    )
    records = read_records(path)
    assert [r.source for r in records] == ["questions.jsonl:1", "questions.jsonl:3"]
    assert records[0].value["question"] == "q" and records[1].error.startswith("invalid JSON")
    (question,) = questions_from_records(records[:1], tmp_path)
    assert question["reference"] == "a" and question["image"].size == image.size
    with pytest.warns(UserWarning, match="questions.jsonl:3: invalid JSON"):
        (only,) = load_questions(path)  # the bad line is reported and skipped
    assert only["source"] == "questions.jsonl:1"
    with pytest.raises(FileNotFoundError, match="questions file not found"):
        load_questions(tmp_path / "nope.jsonl")
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="must hold a list"):
        read_records(tmp_path / "bad.json")


def test_bad_question_lines_are_reported_and_skipped(tmp_path, image):
    image.save(tmp_path / "img.png")  # 320 x 240 = 76,800 pixels
    Image.new("RGB", (400, 300)).save(tmp_path / "huge.png")  # 120,000 pixels
    lines = [
        json.dumps({"id": 1, "image": "img.png", "question": "q1", "answer": "a"}),
        "{oops",
        json.dumps({"id": 3, "image": "img.png"}),
        json.dumps({"id": 4, "image": "missing.png", "question": "q4"}),
        json.dumps({"id": 5, "image": "huge.png", "question": "q5"}),
        json.dumps({"id": 6, "image": "img.png", "question": "q6", "reference": "b"}),
    ]
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        questions = load_questions(path, max_image_pixels=100_000)
    assert [q["id"] for q in questions] == ["1", "6"]
    assert [q["reference"] for q in questions] == ["a", "b"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 4
    assert messages[0].startswith("questions.jsonl:2: invalid JSON")
    assert (
        messages[1]
        == "questions.jsonl:3: a question record needs 'question' and 'image'; question skipped"
    )
    assert messages[2].startswith("questions.jsonl:4: image: image file not found")
    assert messages[3].startswith("questions.jsonl:5: image: image is 400x300 = 120,000 pixels")
    # nothing usable: one clear error rather than an empty run
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1 question"):
        load_questions(tmp_path / "bad.jsonl")


def test_huge_image_is_a_per_record_error_of_a_trace_file(tmp_path, monkeypatch):
    Image.new("RGB", (20, 20)).save(tmp_path / "small.png")
    Image.new("RGB", (400, 300)).save(tmp_path / "huge.png")  # 120,000 pixels
    record = {"image": "small.png", "question": "q", "response": "<answer>x</answer>"}
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps(record | {"image": "huge.png"}) + "\n")
    # over twice PIL's limit: its DecompressionBombError used to abort the whole file
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)
    good, bad = load_traces(path, max_image_pixels=50_000)
    assert good.valid and bad.source == "traces.jsonl:2"
    assert bad.image is None and "exceeds limit" in bad.errors[0], bad.errors
    good, bad = load_traces(path, max_image_pixels=100_000)
    assert good.valid and bad.errors[0].startswith("image: image is 400x300 = 120,000 pixels")
    assert all(t.valid for t in load_traces(path, max_image_pixels=None))

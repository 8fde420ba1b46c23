"""The faithfulness inspector Space, served headless and driven through its API with
gradio_client, on the tiny built-in VLM and the bundled samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageColor
from spaces_utils import import_app, launched

app = import_app("faithfulness_inspector")
SAMPLE = app.SAMPLE_DIR / "images" / "sample_4.png"  # purple square bottom-right, orange elsewhere
QUESTION = "What color is the square in the bottom-right corner of the image?"


@pytest.fixture(scope="module")
def client():
    with launched("faithfulness_inspector") as (_, demo):
        yield Client(demo.local_url, verbose=False)


def test_demo_policy_reads_every_bundled_sample():
    for line in app.SAMPLE_QUESTIONS.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        image = Image.open(app.SAMPLE_DIR / record["image"])
        box, _ = app.region_for(record["question"], image.size)
        assert app.colour_name(image.crop(box)) == record["reference"], record["id"]
    assert app.region_for("top-left?", (224, 224))[0] == [0, 0, 112, 112]
    assert app.colour_name(Image.new("RGB", (40, 40), (128, 128, 128))) == "gray"


def test_generate_a_trace_and_intervene(client):
    annotated, steps = client.predict(
        handle_file(str(SAMPLE)), QUESTION, "purple", app.SCRIPTED, api_name="/generate_trace"
    )
    assert "zoom 1: bbox_2d=[112, 112, 224, 224]" in steps
    assert "<b>Answer:</b> purple" in steps
    assert steps.count("<img src='data:image/png;base64,") == 1  # the crop beside its step
    # the box is drawn on the (2x enlarged) image in the first palette colour
    drawn = np.asarray(Image.open(annotated).convert("RGB"))
    assert drawn.shape[:2] == (448, 448)
    edge = drawn[300, 224 + 1]  # left edge of the box, below its label
    assert np.abs(edge.astype(int) - ImageColor.getrgb(app._PALETTE[0])).max() <= 8
    assert tuple(drawn[300, 100]) != tuple(edge)  # outside the box: the image itself

    answers, intervened, corrupted, verdict = client.predict(app.SCRIPTED, api_name="/intervene")
    by_condition = {row[0]: (row[2], row[3]) for row in answers["data"]}
    assert by_condition["original trace"] == ("purple", True)
    assert by_condition["control"] == ("purple", True)
    # the demo policy answers from its crop: reasoning edits leave it, new crops move it
    assert by_condition["do(T:offline)"] == ("purple", True)
    for kind in app.VISUAL:
        answer, correct = by_condition[f"do(V:{kind})"]
        assert answer != "purple" and correct is False, kind
    assert len(intervened) == len(app.VISUAL)
    assert corrupted and corrupted != "The question points at the bottom right of the image"
    assert "| reliability (0-1) | 0.90 | `Score: 9` |" in verdict
    assert "| sufficiency (crops only, 0/1) | 1.00 |" in verdict


def test_trace_file_with_a_bad_record(client):
    picker, annotated, steps = client.predict(
        handle_file(str(app.SAMPLE_TRACES)), "", api_name="/load_traces"
    )
    labels = [label for label, _ in picker["choices"]]
    assert len(labels) == 9
    assert sum("invalid" in label for label in labels) == 1  # the 'bad' record
    assert picker["value"] == 0 and "<b>Answer:</b> red" in steps
    assert annotated is not None

    _, html = client.predict(8, api_name="/select_trace")
    assert "Invalid trace" in html and "inverted" in html and "<img" not in html
    *_, verdict = client.predict(app.SCRIPTED, api_name="/intervene")
    assert verdict.startswith("The trace is invalid")


def test_bad_inputs_are_named(client):
    with pytest.raises(AppError, match="Upload an image"):
        client.predict(None, QUESTION, "", app.SCRIPTED, api_name="/generate_trace")
    with pytest.raises(AppError, match="Write a question"):
        client.predict(handle_file(str(SAMPLE)), " ", "", app.SCRIPTED, api_name="/generate_trace")


def test_unscripted_tiny_model(client):
    _, steps = client.predict(
        handle_file(str(SAMPLE)), QUESTION, "", app.RAW, api_name="/generate_trace"
    )
    # random weights never close an answer: the app says so and shows the raw output
    assert "Invalid trace" in steps and "missing final answer" in steps
    assert "raw model output" in steps
    *_, verdict = client.predict(app.RAW, api_name="/intervene")
    assert verdict.startswith("The trace is invalid")

    client.predict(handle_file(str(app.SAMPLE_TRACES)), "", api_name="/load_traces")
    answers, *_ = client.predict(app.RAW, api_name="/intervene")  # a valid trace: it regenerates
    conditions = [row[0] for row in answers["data"]]
    assert conditions == ["original trace", "control", "do(T:offline)"] + [
        f"do(V:{kind})" for kind in app.VISUAL
    ]

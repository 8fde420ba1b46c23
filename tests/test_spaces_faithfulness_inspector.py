"""The faithfulness inspector Space, served headless and driven through its API with
gradio_client, on the tiny built-in VLM and the bundled samples; "your model" as a local
folder (the tiny VLM saved to disk) and as an endpoint (a local chat server)."""

from __future__ import annotations

import json

import gradio as gr
import numpy as np
import pytest
from chat_server import ChatServer
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageColor
from spaces_utils import import_app, launched

from hf_faithful.testing.tiny_vlm import save_tiny_vlm

app = import_app("faithfulness_inspector")
SAMPLE = app.SAMPLE_DIR / "images" / "sample_4.png"  # purple square bottom-right, orange elsewhere
QUESTION = "What color is the square in the bottom-right corner of the image?"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """The tiny Qwen3-VL (random weights, seed 0: the "random weights" choice) on disk."""
    return save_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny-qwen3-vl")


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


def test_a_local_model_folder_end_to_end(tiny_folder):
    """A folder typed as "your model" runs the Space's callbacks: a trace of its own (the
    random weights never close an answer), then every intervention on a valid trace."""
    your = {"model_path": tiny_folder, "coords": "absolute", "judge": "both", "preset": "none"}
    trace = app.generate_trace(Image.open(SAMPLE), QUESTION, "", app.CUSTOM, **your)
    assert trace.errors == ["missing final answer (<answer>...</answer>)"]
    assert "raw model output" in app.steps_html(trace)
    [backend] = [b for k, b in app._backends.items() if k[0] == "local"]
    assert backend.model.config._name_or_path == tiny_folder  # loaded from the folder

    sample = app.read_trace_file(str(app.SAMPLE_TRACES))[0]
    answers, intervened, corrupted, verdict = app.intervene(sample, app.CUSTOM, **your)
    assert [row[0] for row in answers] == ["original trace", "control", "do(T:offline)"] + [
        f"do(V:{kind})" for kind in app.VISUAL
    ]
    assert len(intervened) == len(app.VISUAL) * len(sample.crops) and corrupted
    assert "| reliability (0-1) |" in verdict and "| sufficiency (crops only, 0/1) |" in verdict
    # asked again (any spelling of the folder), the model is not loaded twice
    assert app.get_backend(app.CUSTOM, tiny_folder + "/") is backend
    *_, verdict = app.intervene(sample, app.CUSTOM, **(your | {"judge": "none"}))
    assert "No judge" in verdict and "| reliability" not in verdict


def test_a_local_model_folder_through_the_api(client, tiny_folder):
    _, steps = client.predict(
        handle_file(str(SAMPLE)),
        QUESTION,
        "",
        app.CUSTOM,
        model_path=tiny_folder,
        coords="absolute",
        api_name="/generate_trace",
    )
    assert "Invalid trace" in steps and "missing final answer" in steps
    with pytest.raises(AppError, match="model id or folder: folder not found: /no/such/model"):
        client.predict(
            handle_file(str(SAMPLE)),
            QUESTION,
            "",
            app.CUSTOM,
            model_path="/no/such/model",
            api_name="/generate_trace",
        )


def test_loading_errors_name_the_field(tmp_path):
    image = Image.open(SAMPLE)

    def generate(**your):
        return app.generate_trace(image, QUESTION, "", app.CUSTOM, **your)

    with pytest.raises(gr.Error, match="model id or folder: folder not found: /no/such/folder"):
        generate(model_path="/no/such/folder")
    with pytest.raises(gr.Error, match="model id or folder: type a Hub model id"):
        generate(model_path=" ")
    with pytest.raises(gr.Error, match="model id or folder: could not load .* Hub id"):
        generate(model_path="no-such-org/no-such-model")  # offline: not in the cache
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(gr.Error, match="model id or folder: .*not a vision-language model"):
        generate(model_path=str(tmp_path))
    with pytest.raises(gr.Error, match="endpoint URL: cannot reach"):
        generate(model_path="served", endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(gr.Error, match="endpoint URL: must start with http"):
        generate(model_path="served", endpoint="localhost:8000/v1")
    with pytest.raises(gr.Error, match="box coordinate frame: one of"):
        generate(model_path="served", coords="normalized_1")
    assert not [k for k in app._backends if k[0] == "endpoint"]  # failures are not cached


def test_an_endpoint_serving_the_model():
    def respond(body):
        return "<think>It is purple.</think><answer>purple</answer>"

    with ChatServer(respond, models=["my-vlm"]) as server:
        your = {"endpoint": server.base_url, "coords": "absolute", "judge": "none"}
        with pytest.raises(gr.Error, match="model id or folder: .* serves my-vlm, not 'other'"):
            app.generate_trace(Image.open(SAMPLE), QUESTION, "", app.CUSTOM, "other", **your)
        trace = app.generate_trace(
            Image.open(SAMPLE), QUESTION, "purple", app.CUSTOM, "my-vlm", **your
        )
        assert trace.valid and trace.answer == "purple" and not trace.crops
        assert server.requests[-1]["model"] == "my-vlm"
        assert "Authorization" not in server.headers[-1]  # no key typed, none sent


def test_the_default_model_comes_from_the_environment(tiny_folder, monkeypatch):
    defaults = app.Defaults.from_env({app.ENV_MODEL: tiny_folder})
    assert defaults.settings() == {  # its config.json says Qwen3-VL: 0..1000 boxes
        "model": app.CUSTOM,
        "coords": "normalized_1000",
        "judge": "both",
        "preset": "none",
    }
    deepeyes = app.Defaults.from_env({app.ENV_MODEL: "ChenShawn/DeepEyes-7B"}).settings()
    assert (deepeyes["preset"], deepeyes["coords"]) == ("deepeyes", "absolute")
    assert app.Defaults.from_env({}).settings()["model"] == app.REFERENCE
    with pytest.raises(ValueError, match="HF_FAITHFUL_INSPECTOR_COORDS.*'pixels'"):
        app.Defaults.from_env({app.ENV_MODEL: "m", app.ENV_COORDS: "pixels"})
    # the owner's API key goes to the owner's endpoint only
    monkeypatch.setenv(app.ENV_API_KEY, "secret")
    monkeypatch.setattr(app, "_defaults", app.Defaults(model="m", endpoint="http://owner/v1"))
    assert app._owner_key("http://owner/v1") == "secret"
    assert app._owner_key("http://visitor/v1") == ""
    # started with a model that cannot load: a message and status 2, before serving
    with pytest.raises(SystemExit) as exit_info:
        app.main(["--model", "/no/such/folder"])
    assert exit_info.value.code == 2

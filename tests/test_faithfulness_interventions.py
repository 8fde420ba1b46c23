"""do(V) and do(T): what each intervention changes, and what it leaves alone."""

import numpy as np
import pytest
from chat_server import ChatServer, request_text
from PIL import Image

from hf_faithful.faithfulness.interventions import (
    VISUAL_INTERVENTIONS,
    corrupt_text,
    intervene_text,
    intervene_visual,
)
from hf_faithful.mcot.backends import OpenAIChatBackend
from hf_faithful.mcot.records import load_traces

SAMPLE = "hf_faithful/assets/faithfulness/sample_traces.jsonl"


@pytest.fixture(scope="module")
def traces():
    return [t for t in load_traces(SAMPLE) if t.valid]


def _pixels(image):
    return np.asarray(image, dtype=np.int64)


@pytest.mark.parametrize("kind", ["noise_gaussian", "noise_uniform", "blank"])
def test_replaced_crops_keep_size_and_text(traces, kind):
    out = intervene_visual(traces, kind, seed=0)
    for before, after in zip(traces, out):
        assert after.metadata["intervention"] == f"visual:{kind}"
        assert [s.text for s in after.steps] == [s.text for s in before.steps]
        assert after.image is before.image and after.answer == before.answer
        for old, new in zip(before.crops, after.crops):
            assert new.size == old.size and new.mode == "RGB"
            assert not np.array_equal(_pixels(new), _pixels(old))
    pixels = _pixels(out[0].crops[0])
    if kind == "blank":
        assert (pixels == 128).all()
    elif kind == "noise_gaussian":
        assert abs(pixels.mean() - 128) < 8 and 50 < pixels.std() < 70
    else:
        assert abs(pixels.mean() - 127.5) < 8 and pixels.min() < 5 and pixels.max() > 250
    # the originals are untouched and the draw is seeded
    assert traces[0].crops[0] is not out[0].crops[0]
    again = intervene_visual(traces, kind, seed=0)
    assert np.array_equal(_pixels(again[0].crops[0]), pixels)


def test_other_region_is_a_same_size_crop_elsewhere(traces):
    out = intervene_visual(traces, "other_region", seed=0)
    for before, after in zip(traces, out):
        for old_box, new_box, crop in zip(before.boxes, after.boxes, after.crops):
            assert (new_box.width, new_box.height) == (old_box.width, old_box.height)
            overlap_w = max(0, min(old_box.x2, new_box.x2) - max(old_box.x1, new_box.x1))
            overlap_h = max(0, min(old_box.y2, new_box.y2) - max(old_box.y1, new_box.y1))
            assert overlap_w * overlap_h == 0  # 224 px image, 60 px box: room for no overlap
            region = after.image.crop(tuple(int(v) for v in new_box.to_list()))
            assert np.array_equal(_pixels(crop), _pixels(region))


def test_shuffle_gives_each_trace_the_crops_of_another(traces):
    out = intervene_visual(traces, "shuffle", seed=0)
    donors = {}
    for i, after in enumerate(out):
        (donor,) = [j for j, t in enumerate(traces) if t.crops[0] is after.crops[0]]
        assert donor != i
        donors[i] = donor
    assert sorted(donors.values()) == list(range(len(traces)))  # a permutation
    with pytest.raises(ValueError, match="at least 2 traces"):
        intervene_visual(traces[:1], "shuffle")
    with pytest.raises(ValueError, match="one of"):
        intervene_visual(traces, "sepia")
    assert set(VISUAL_INTERVENTIONS) == {
        "noise_gaussian",
        "noise_uniform",
        "blank",
        "other_region",
        "shuffle",
    }


@pytest.mark.parametrize(
    ("text", "kinds", "expected"),
    [
        (
            "The car is on the left, below the sign.",
            ("directions",),
            "The car is on the right, above the sign.",
        ),
        ("Left and UPPER.", ("directions",), "Right and LOWER."),
        (
            "It is red. There isn't a dog. It cannot fly.",
            ("negations",),
            "It is not red. There is a dog. It can fly.",
        ),
        ("No cues here.", ("colors",), "It is not the case that no cues here."),
    ],
)
def test_offline_corruptions_hand_checked(text, kinds, expected):
    assert corrupt_text(text, 0, kinds)[0] == expected


def test_numbers_and_colors_always_change():
    rng = np.random.default_rng(0)
    for _ in range(50):
        text, edits = corrupt_text(
            "I count 3 red cars and two blue ones, 2.5 m apart.", rng, ("numbers", "colors")
        )
        assert edits == 5
        words = text.replace(",", "").split()
        assert (
            words[2] != "3"
            and words[3] not in ("red",)
            and words[6] != "two"
            and words[7] != "blue"
        )
        assert words[9] != "2.5"
    with pytest.raises(ValueError, match="kinds"):
        corrupt_text("x", 0, ("typos",))


def test_text_intervention_keeps_crops(traces):
    out = intervene_text(traces, seed=0)
    for before, after in zip(traces, out):
        assert after.crops == before.crops
        assert after.reasoning != before.reasoning
        assert after.metadata["text_edits"] >= 1
    assert traces[0].reasoning.startswith("The question asks")  # original untouched


def test_rewriter_endpoint_with_the_shipped_prompt(traces):
    def respond(body):
        prompt = request_text(body)
        reasoning = prompt.split("Reasoning: ", 1)[1]
        return "Rewritten reasoning: " + reasoning.replace("question", "QUESTION")

    with ChatServer(respond) as server:
        out = intervene_text(traces[:2], rewriter=OpenAIChatBackend(server.base_url, "rw"))
    assert len(server.requests) == sum(
        len([s for s in t.steps if s.kind == "text"]) for t in traces[:2]
    )
    assert "factual mistakes" in request_text(server.requests[0])
    assert out[0].steps[0].text == traces[0].steps[0].text.replace("question", "QUESTION")
    # the last step has no "question": its rewrite is unchanged, so it is corrupted offline
    assert "question" not in traces[0].steps[-1].text
    assert out[0].steps[-1].text != traces[0].steps[-1].text
    assert out[0].metadata["text_edits"] > 0
    assert out[0].metadata["intervention"] == "textual:rewriter"


def test_crop_noise_does_not_need_the_full_image():
    from hf_faithful.mcot.trace import Step, Trace

    trace = Trace("q", None, [Step("zoom", crop=Image.new("RGB", (40, 40)))], answer="a")
    (out,) = intervene_visual([trace], "noise_uniform")
    assert out.crops[0].size == (40, 40)
    with pytest.raises(ValueError, match="needs the full image"):
        intervene_visual([trace], "other_region")

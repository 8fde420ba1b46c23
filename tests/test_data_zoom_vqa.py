"""ZoomVQA: seeded, tagged, DeepEyes-compatible."""

from __future__ import annotations

import io

import pytest

from hf_faithful.data.zoom_vqa import (
    CANVAS,
    COLORS,
    MARKS,
    QUESTION_TYPES,
    build_zoom_vqa,
    cell_box_1000,
    export_questions,
    sample_stream,
)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def small():
    return build_zoom_vqa(n_train=24, n_validation=6, n_test=12, seed=0)


def test_same_seed_same_bytes_other_seed_other_data(small):
    again = build_zoom_vqa(n_train=24, n_validation=6, n_test=12, seed=0)
    for split in ("train", "validation", "test"):
        a, b = small[split], again[split]
        assert a["question"] == b["question"] and a["answer"] == b["answer"]
        assert [_png(x) for x in a["image"]] == [_png(x) for x in b["image"]]
    other = build_zoom_vqa(n_train=24, n_validation=0, n_test=0, seed=1)
    assert [_png(x) for x in other["train"]["image"]] != [_png(x) for x in small["train"]["image"]]
    assert set(other) == {"train"}  # an empty split is left out


def test_splits_are_separate_streams(small):
    train = {_png(x) for x in small["train"]["image"]}
    test = {_png(x) for x in small["test"]["image"]}
    assert not train & test
    # growing train does not change test
    bigger = build_zoom_vqa(n_train=40, n_validation=0, n_test=12, seed=0)
    assert bigger["test"]["question"] == small["test"]["question"]


def test_tags_and_ground_truth_agree_with_pixels():
    types = set()
    for _, s in zip(range(60), sample_stream("train", 0)):
        types.add(s.question_type)
        assert s.question_type in QUESTION_TYPES
        assert s.image.size == (CANVAS, CANVAS)
        assert 3 <= s.n_objects <= 6 and len(s.objects) == s.n_objects
        if s.question_type == "zoom_needed":
            x1, y1, x2, y2 = s.target_box
            assert 0 <= x1 < x2 <= CANVAS and 0 <= y1 < y2 <= CANVAS
            # the box holds the asked colour (a corner, away from the dot) and the dot
            assert s.image.getpixel((x1 + 2, y1 + 2)) == COLORS[s.target_color]
            row, col = s.target_cell
            assert f"row {row + 1}, column {col + 1}" in s.question and s.answer in MARKS
            target = next(o for o in s.objects if o["color"] == s.target_color)
            assert target["mark"] == s.answer and target["box"] == s.target_box
            pixels = s.image.crop(s.target_box).getdata()
            assert sum(p == MARKS[s.answer] for p in pixels) > 0.7 * 48 * 48
            cx1, cy1, cx2, cy2 = (v * CANVAS / 1000 for v in cell_box_1000(row, col))
            assert cx1 <= x1 and cy1 <= y1 and x2 <= cx2 and y2 <= cy2  # the cell holds it
        else:
            assert s.target_box == [] and s.target_cell == []
            if s.template == "count":
                assert s.answer == str(s.n_objects)
            else:
                present = any(o["color"] == s.target_color for o in s.objects)
                assert s.answer == ("yes" if present else "no")
    assert types == set(QUESTION_TYPES)


def test_load_deepeyes_takes_a_split_as_is(small):
    from hf_faithful.sccm.data import load_deepeyes

    rows = load_deepeyes(small["test"])
    row = rows[0]
    assert row["prompt"][-1] == {"role": "user", "content": small["test"][0]["question"]}
    assert row["answer"] == small["test"][0]["answer"]


def test_bad_sizes_name_the_argument():
    with pytest.raises(ValueError, match="n_test"):
        build_zoom_vqa(n_train=1, n_validation=1, n_test=-1)
    with pytest.raises(ValueError, match="split"):
        next(sample_stream("dev"))


def test_exported_questions_read_back_through_the_faithfulness_reader(tmp_path):
    from hf_faithful.mcot.records import questions_from_records, read_records

    path = export_questions(tmp_path / "zoomvqa", n=5)
    samples = questions_from_records(read_records(path), path.parent)
    expected = [s for _, s in zip(range(5), sample_stream("test", 0))]
    assert [s["question"] for s in samples] == [s.question for s in expected]
    assert [s["reference"] for s in samples] == [s.answer for s in expected]
    assert _png(samples[0]["image"]) == _png(expected[0].image)

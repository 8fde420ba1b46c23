"""compute_faithfulness (the mcot_faithfulness metric's logic) against hand-computed values."""

import pytest

from hf_faithful.faithfulness.metric import compute_faithfulness


def test_compute_faithfulness_columns():
    out = compute_faithfulness(
        predictions=["red", "blue", "B", "3", None],
        references=["red", "blue", "B", "3", "cat"],
        textual_predictions=["green", "blue", "A", "4", "cat"],
        visual_predictions=["red", "Blue.", "B", "3.0", None],
        reliability=[1.0, 0.5, None, 0.0, 1.0],
        sufficiency=[1, 0, 1, 1, 0],
        n_resamples=500,
    )
    assert out["n"] == 5 and out["accuracy"] == 4 / 5
    assert out["textual_accuracy"] == 2 / 5 and out["ate_t"] == pytest.approx(-2 / 5)
    assert out["ate_t_flipped"] == [0, 2, 3, 4]
    assert out["ate_t_p_value"] == pytest.approx(2 * 5 / 16)  # lost 3, gained 1
    assert out["ate_v"] == 0.0 and out["ate_v_p_value"] == 1.0
    assert out["reliability"] == pytest.approx(2.5 / 4) and out["reliability_n_scored"] == 4
    assert out["sufficiency"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="textual_predictions has 1 values"):
        compute_faithfulness(["a", "b"], ["a", "b"], textual_predictions=["a"])


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"references": ["a", None]}, r"references\[1\] is None"),
        ({"references": ["", "b"]}, r"references\[0\] is empty"),  # "" vs "" is not correct
        ({"references": ["a", "  "]}, r"references\[1\] is empty"),
        ({"reliability": [7, 3]}, r"reliability\[0\] = 7 is outside \[0, 1\].*0-10"),
        ({"sufficiency": [1, -1]}, r"sufficiency\[1\] = -1 is outside \[0, 1\]"),
        ({"reliability": [0.5, float("nan")]}, r"reliability\[1\] is NaN: use None"),
        ({"reliability": ["0.5", None]}, r"reliability\[0\] must be a number .* got str"),
        ({"textual_predictions": ["a", 3]}, r"textual_predictions\[1\] must be a string .* int"),
        ({"predictions": "ab"}, "predictions must be a list, got str"),
    ],
)
def test_bad_values_are_refused_naming_column_and_index(columns, message):
    kwargs = {"predictions": ["a", "b"], "references": ["a", "b"]} | columns
    with pytest.raises(ValueError, match=message):
        compute_faithfulness(**kwargs, n_resamples=10)


def test_missing_predictions_count_as_wrong():
    out = compute_faithfulness([None, "", "c"], ["a", "b", "c"], n_resamples=10)
    assert out["accuracy"] == pytest.approx(1 / 3)
    # a reply holding only an article or punctuation is no answer either
    assert compute_faithfulness([".", "the"], ["A", "a"], n_resamples=10)["accuracy"] == 0.0

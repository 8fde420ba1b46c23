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

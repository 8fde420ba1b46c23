"""The `mcot_faithfulness` evaluate module: loading offline, values, the gradio 6 app."""

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "evaluate_metrics" / "mcot_faithfulness"

COLUMNS = {
    "predictions": ["red", "blue", "B", "3"],
    "references": ["red", "blue", "B", "3"],
    "textual_predictions": ["green", "blue", "A", "4"],
    "visual_predictions": ["red", "blue", "B", "3"],
}


def test_repo_root_entry_is_the_metric_script():
    # `evaluate.load("hf_faithful/mcot_faithfulness")` reads ./hf_faithful/mcot_faithfulness/
    # from the repository root: a link to the one metric script, not a copy.
    entry = ROOT / "hf_faithful" / "mcot_faithfulness" / "mcot_faithfulness.py"
    assert entry.resolve() == (FOLDER / "mcot_faithfulness.py").resolve()


def test_load_by_name_from_the_repo_root(monkeypatch):
    import evaluate

    monkeypatch.chdir(ROOT)
    metric = evaluate.load("hf_faithful/mcot_faithfulness")
    out = metric.compute(**COLUMNS, reliability=[1.0, 0.5, None, 0.0], n_resamples=1000)
    assert out["accuracy"] == 1.0
    assert out["ate_t"] == -0.75 and out["ate_t_flipped"] == [0, 2, 3]
    assert out["ate_t_p_value"] == pytest.approx(0.25)  # 3 lost, 0 gained: 2 / 2**3
    # no flip in 4 pairs: Newcombe's interval is +-(1 - Wilson lower bound of 4/4) = +-0.4899
    assert out["ate_v"] == 0.0 and out["ate_v_ci_high"] == pytest.approx(0.4899, abs=1e-4)
    assert out["ate_v_ci_low"] == pytest.approx(-out["ate_v_ci_high"])
    assert out["reliability"] == pytest.approx(0.5) and out["reliability_n_scored"] == 3


def test_load_by_folder_path_anywhere(tmp_path, monkeypatch):
    import evaluate

    monkeypatch.chdir(tmp_path)
    metric = evaluate.load(str(FOLDER))
    out = metric.compute(
        predictions=["(B) red", "A"], references=["B", "C"], match="choice", n_resamples=100
    )
    assert out["accuracy"] == 0.5 and "ate_t" not in out
    with pytest.raises(ValueError, match="visual_predictions has 2 values"):
        metric.compute(
            predictions=["a"], references=["a"], visual_predictions=["a", "b"], n_resamples=10
        )


def test_add_batch_carries_every_column(tmp_path, monkeypatch):
    import evaluate

    from hf_faithful.faithfulness.metric import compute_faithfulness

    monkeypatch.chdir(tmp_path)
    metric = evaluate.load(str(FOLDER))
    assert set(metric.features) == {*COLUMNS, "reliability", "sufficiency"}
    columns = COLUMNS | {
        "predictions": ["red", None, "B", "3"],  # None: no answer, counts as wrong
        "reliability": [1.0, 0.5, None, 0.0],
        "sufficiency": [1, 0, 1, True],
    }
    for start in (0, 2):
        metric.add_batch(**{name: values[start : start + 2] for name, values in columns.items()})
    out = metric.compute(n_resamples=200)
    assert out == compute_faithfulness(**columns, n_resamples=200)
    assert out["accuracy"] == 0.75 and out["ate_t_flipped"] == [0, 1, 2, 3]
    assert out["reliability_n_scored"] == 3 and out["sufficiency"] == 0.75
    # add() one sample at a time; columns left out are absent from the result
    for prediction, reference, visual in zip(["red", "x"], ["red", "blue"], ["green", "red"]):
        metric.add(prediction=prediction, reference=reference, visual_predictions=visual)
    out = metric.compute(n_resamples=200)
    assert out["accuracy"] == 0.5 and out["ate_v"] == -0.5
    assert "ate_t" not in out and "reliability" not in out


def test_bad_values_are_refused_naming_column_and_index(tmp_path, monkeypatch):
    import evaluate

    monkeypatch.chdir(tmp_path)
    metric = evaluate.load(str(FOLDER))
    with pytest.raises(ValueError, match=r"references\[0\] is None"):
        metric.compute(predictions=["a"], references=[None], n_resamples=10)
    with pytest.raises(ValueError, match=r"references\[1\] is empty"):
        metric.compute(predictions=["a", ""], references=["a", ""], n_resamples=10)
    with pytest.raises(ValueError, match=r"reliability\[0\] = 7.0 is outside \[0, 1\]"):
        metric.compute(predictions=["a", "b"], references=["a", "b"], reliability=[7.0, 3.0])
    # in a later batch the index counts from the first sample
    metric.add_batch(predictions=["a", "b"], references=["a", "b"])
    with pytest.raises(ValueError, match=r"references\[3\] is None"):
        metric.add_batch(predictions=["c", "d"], references=["c", None])
    with pytest.raises(ValueError, match="every batch must hold the same columns"):
        metric.add_batch(predictions=["c"], references=["c"], sufficiency=[1])
    assert metric.compute(n_resamples=10)["n"] == 2  # the refused batches left no trace


def test_card_has_space_front_matter():
    card = (FOLDER / "README.md").read_text()
    head = card.split("---")[1]
    for key in ("sdk: gradio", "app_file: app.py", "- evaluate", "- metric"):
        assert key in head
    assert "hf-faithful" in (FOLDER / "requirements.txt").read_text()
    # evaluate itself stores None in string columns; the module refuses bad values
    assert "evaluate` refuses `None`" not in card
    assert "add_batch" in card and "ValueError" in card


def test_gradio_app_headless():
    from gradio_client import Client

    spec = importlib.util.spec_from_file_location("mcot_faithfulness_app", FOLDER / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1")
    try:
        client = Client(app.demo.local_url, verbose=False)
        table = {"headers": app.COLUMNS, "data": app.EXAMPLE}
        out = client.predict(table, None, "exact", 500, 0.95, 0, api_name="/compute")
    finally:
        app.demo.close()
    # EXAMPLE: 3 of 4 correct; do(T) loses samples 0 and 2 and gains 3; do(V) keeps all
    assert out["accuracy"] == 0.75 and out["ate_t"] == -0.25 and out["ate_t_flipped"] == [0, 2, 3]
    assert out["ate_v"] == 0.0 and out["sufficiency"] == 0.5

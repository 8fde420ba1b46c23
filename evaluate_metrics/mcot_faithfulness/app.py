"""Gradio 6 app of the mcot_faithfulness metric (evaluate's own widget helper is broken on
gradio >= 4). Paste per-sample columns or upload a JSONL/CSV file, get the metrics."""

import json
from pathlib import Path

import evaluate
import gradio as gr
import pandas as pd

HERE = Path(__file__).resolve().parent
COLUMNS = [
    "predictions",
    "references",
    "textual_predictions",
    "visual_predictions",
    "reliability",
    "sufficiency",
]
EXAMPLE = [
    ["red", "red", "green", "red", 0.9, 1],
    ["blue", "blue", "blue", "blue", 0.7, 1],
    ["B", "B", "A", "B", 0.4, 0],
    ["3", "4", "4", "3", None, 0],
]

metric = evaluate.load(str(HERE / "mcot_faithfulness.py"))


def _frame(table, upload):
    if upload is not None:
        path = Path(upload)
        if path.suffix == ".csv":
            return pd.read_csv(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        return pd.DataFrame([json.loads(line) for line in lines if line.strip()])
    return table if isinstance(table, pd.DataFrame) else pd.DataFrame(table, columns=COLUMNS)


def _column(frame, name, numeric=False):
    if name not in frame or frame[name].replace("", None).isna().all():
        return None
    values = frame[name].replace("", None)
    if numeric:
        return [None if pd.isna(v) else float(v) for v in values]
    return [None if pd.isna(v) else str(v) for v in values]


def compute(table, upload, match, n_resamples, confidence, seed):
    frame = _frame(table, upload)
    missing = [c for c in ("predictions", "references") if c not in frame]
    if missing:
        raise gr.Error(f"missing column(s): {missing}")
    frame = frame.dropna(subset=["predictions", "references"], how="all")
    try:
        return metric.compute(
            predictions=_column(frame, "predictions"),
            references=_column(frame, "references"),
            textual_predictions=_column(frame, "textual_predictions"),
            visual_predictions=_column(frame, "visual_predictions"),
            reliability=_column(frame, "reliability", numeric=True),
            sufficiency=_column(frame, "sufficiency", numeric=True),
            match=match,
            n_resamples=int(n_resamples),
            confidence=float(confidence),
            seed=int(seed),
        )
    except ValueError as err:
        raise gr.Error(str(err)) from None


with gr.Blocks(title="mcot_faithfulness") as demo:
    gr.Markdown((HERE / "README.md").read_text(encoding="utf-8").split("---", 2)[-1])
    with gr.Row():
        with gr.Column():
            table = gr.Dataframe(value=EXAMPLE, headers=COLUMNS, label="per-sample columns")
            upload = gr.File(label="or a JSONL / CSV file with these columns", type="filepath")
            match = gr.Dropdown(["exact", "choice"], value="exact", label="answer matching")
            n_resamples = gr.Number(10_000, label="bootstrap resamples", precision=0)
            confidence = gr.Slider(0.5, 0.999, value=0.95, label="confidence")
            seed = gr.Number(0, label="seed", precision=0)
            button = gr.Button("Compute", variant="primary")
        result = gr.JSON(label="metrics")
    button.click(
        compute,
        [table, upload, match, n_resamples, confidence, seed],
        result,
        api_name="compute",
    )

if __name__ == "__main__":
    demo.launch()

"""The pruning explorer Space, served headless and driven through its API with gradio_client."""

from __future__ import annotations

import re

import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from spaces_utils import launched

from hf_faithful.corpora import calibration_text
from hf_faithful.evaluation.perplexity import perplexity
from hf_faithful.models import REFERENCE_MODEL_DIR
from hf_faithful.pruning import PolicyGradientPruner, PruningConfig


@pytest.fixture(scope="module")
def served():
    with launched("pruning_explorer") as (app, demo):
        yield app, Client(demo.local_url, verbose=False)


def _kept(table: dict) -> list[tuple[int, int, int]]:
    """(query heads, kv heads, channels) kept per layer, read from the table's 'k / n' cells."""
    return [tuple(int(cell.split("/")[0]) for cell in row[1:]) for row in table["data"]]


def _param_counts(markdown: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"\| (\d[\d,]+)", markdown)]


def test_prune_live_then_compare_with_the_dense_model(served, reference_model):
    app, client = served
    dense, tokenizer = reference_model
    _, summary, table = client.predict(0.5, 2, "both", api_name="/prune")

    result = next(r for key, r in app._results.items() if key.startswith("live:0.50:2:both"))
    config = result.pruned.config
    assert _kept(table) == list(
        zip(
            config.num_attention_heads_per_layer,
            config.num_key_value_heads_per_layer,
            config.intermediate_size_per_layer,
        )
    )
    # global budget: half of all MLP channels and KV-head groups survive, however spread
    text = dense.config
    n_layers = text.num_hidden_layers
    assert sum(c for _, _, c in _kept(table)) == round(0.5 * text.intermediate_size * n_layers)
    assert sum(kv for _, kv, _ in _kept(table)) == round(0.5 * text.num_key_value_heads * n_layers)
    n_dense = sum(p.numel() for p in dense.parameters())
    n_pruned = sum(p.numel() for p in result.pruned.parameters())
    assert _param_counts(summary) == [n_dense, n_pruned]
    assert n_pruned < n_dense

    ppl = client.predict(2, api_name="/perplexity")["data"][0]
    expected_dense = perplexity(dense, tokenizer, max_chunks=2, progress=False)
    expected_pruned = perplexity(result.pruned, tokenizer, max_chunks=2, progress=False)
    assert ppl[1:3] == [f"{expected_dense:.2f}", f"{expected_pruned:.2f}"]

    dense_text, pruned_text = client.predict("The river", 8, api_name="/generate")
    ids = tokenizer("The river", return_tensors="pt")
    with torch.no_grad():
        out = dense.generate(
            **ids, max_new_tokens=8, do_sample=False, no_repeat_ngram_size=3,
            repetition_penalty=app.REPETITION_PENALTY, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    assert dense_text == tokenizer.decode(out[0], skip_special_tokens=True)
    assert pruned_text.startswith("The river") and len(pruned_text) > len("The river")


def test_load_a_saved_pruned_folder(served, reference_model, tmp_path):
    app, client = served
    dense, tokenizer = reference_model
    pruner = PolicyGradientPruner(
        dense,
        tokenizer,
        PruningConfig(sparsity=0.25, max_steps=0, init_num_samples=8, target="channels"),
    )
    pruner.fit(calibration_text(), progress=False)
    folder = tmp_path / "pruned"
    saved = pruner.save_pretrained(folder)

    _, summary, table = client.predict(str(folder), api_name="/load")

    sizes = pruner.layer_sizes()
    assert [c for _, _, c in _kept(table)] == sizes["intermediate_size"]
    assert [kv for _, kv, _ in _kept(table)] == [dense.config.num_key_value_heads] * 4
    result = app._results[f"load:{folder}"]
    # the base is recorded by name, not by this machine's path (issue 13); the explorer finds
    # the bundled reference model by its architecture
    assert saved.config.pruning["base_model"] == "hf-faithful reference model"
    assert str(REFERENCE_MODEL_DIR) not in (folder / "config.json").read_text()
    assert result.dense_label == "bundled reference model (same architecture as the base)"
    assert result.channel_scores is not None  # read back from the saved prune state
    assert torch.equal(torch.cat(result.channel_scores), pruner.scores_channels)
    assert _param_counts(summary) == [
        sum(p.numel() for p in dense.parameters()),
        sum(p.numel() for p in saved.parameters()),
    ]


def test_load_reports_bad_sources(served, tmp_path):
    _, client = served
    with pytest.raises(AppError, match="does not exist"):
        client.predict(str(tmp_path / "missing"), api_name="/load")
    with pytest.raises(AppError, match="not a pruned model"):
        client.predict(str(REFERENCE_MODEL_DIR), api_name="/load")
    with pytest.raises(AppError, match="Enter a pruned model"):
        client.predict("  ", api_name="/load")


def _image(plot_value):
    """The picture of a gr.Plot output as the client receives it (a data URL; gradio
    sends matplotlib figures as WebP)."""
    import base64
    import io

    from PIL import Image

    found = re.search(r"data:image/\w+;base64,([A-Za-z0-9+/=]+)", str(plot_value))
    assert found, f"no image in {str(plot_value)[:200]}"
    image = Image.open(io.BytesIO(base64.b64decode(found.group(1))))
    image.load()
    return image


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_trade_off_curves_of_a_live_prune(served, reference_model):
    app, client = served
    dense, tokenizer = reference_model
    client.predict(0.4, 5, "both", api_name="/prune")
    result = app._results["live:0.40:5:both"]

    # the learning curve: the loss of every step, held-out perplexity at step 0 (the
    # Wanda-sp init) and every step after (eval_steps = steps // 5), dense drawn flat
    assert [h["step"] for h in result.history if "loss" in h] == [1, 2, 3, 4, 5]
    evals = [h for h in result.history if "eval_perplexity" in h]
    assert [h["step"] for h in evals] == [0, 1, 2, 3, 4, 5]
    # the last in-loop evaluation (hard masks) is the compressed model on the same chunks
    final = perplexity(result.pruned, tokenizer, max_chunks=app.DEFAULT_CHUNKS, progress=False)
    assert evals[-1]["eval_perplexity"] == pytest.approx(final, rel=1e-4)
    assert _image(client.predict(api_name="/learning_curve")).width > 500
    loss_ax, ppl_ax = app.learning_curve("live:0.40:5:both").axes
    assert _labels(loss_ax) == ["loss (mean over sampled masks)", "baseline (moving average)"]
    dense_ppl = perplexity(dense, tokenizer, max_chunks=app.DEFAULT_CHUNKS, progress=False)
    assert _labels(ppl_ax) == [
        "held-out perplexity (hard masks)",
        f"dense, WikiText-2 test {app.DEFAULT_CHUNKS} x 128 ({dense_ppl:.1f})",
    ]

    # perplexity against sparsity: one-shot prunes of the dense model, this model starred
    assert _image(client.predict(2, api_name="/tradeoff")).width > 500
    curve = app._tradeoffs[("bundled reference model", "both", 2)]
    expected = {"dense"} | {
        f"global/{s}/{m}" for s in app.TRADEOFF_SPARSITIES for m in app.TRADEOFF_METHODS
    }
    assert set(curve) == expected
    assert curve["dense"]["ppl"] == pytest.approx(
        perplexity(dense, tokenizer, max_chunks=2, progress=False)
    )
    # an entry is the named one-shot method, measured on the same chunks
    pruner = PolicyGradientPruner(
        dense,
        tokenizer,
        PruningConfig.for_method(
            "wanda-sp-global", sparsity=0.5, compensate=True, init_num_samples=16
        ),
    )
    pruner.initialize(pruner.prepare_data(calibration_text()), progress=False)
    assert curve["global/0.5/wanda_sp+comp"]["ppl"] == pytest.approx(
        perplexity(pruner.compress(), tokenizer, max_chunks=2, progress=False), rel=1e-5
    )
    ppl = [curve[f"global/{s}/magnitude"]["ppl"] for s in app.TRADEOFF_SPARSITIES]
    assert ppl[-1] > ppl[0] > curve["dense"]["ppl"]  # more pruned, worse
    (ax,) = app.tradeoff("live:0.40:5:both", 2).axes
    assert _labels(ax) == [
        "magnitude",
        "Wanda-sp +comp",
        "this model",
        f"dense ({curve['dense']['ppl']:.1f})",
        "1.5 x dense",
    ]
    star = next(line for line in ax.get_lines() if line.get_label() == "this model")
    assert list(star.get_xdata()) == [40.0]
    assert list(star.get_ydata()) == [result.perplexity[2]]


def test_trade_off_curves_of_a_one_shot_load(served, reference_model, tmp_path):
    """A loaded one-shot prune has no learning curve to show; it says so."""
    app, client = served
    dense, tokenizer = reference_model
    pruner = PolicyGradientPruner(
        dense, tokenizer, PruningConfig(sparsity=0.2, max_steps=0, init_num_samples=8)
    )
    pruner.fit(calibration_text(), progress=False)
    folder = tmp_path / "one-shot"
    pruner.save_pretrained(folder)
    client.predict(str(folder), api_name="/load")
    assert _image(client.predict(api_name="/learning_curve")).width > 500
    fig = app.learning_curve(f"load:{folder}")
    assert len(fig.axes) == 1
    assert "no policy-gradient steps" in " ".join(fig.get_suptitle().split())

"""Pruning explorer: what policy-gradient structural pruning (arXiv 2406.10576) removes.

Prune the bundled reference Llama live (sparsity slider, progress bar) or load a pruned
model folder / Hub id, then compare it with the dense model: kept attention heads and MLP
channels per layer, parameter counts, WikiText-2 perplexity and greedy generations for
the same prompt. The trade-off curves show the prune's policy-gradient learning curve and
perplexity against sparsity for quick one-shot prunes of the same dense model (drawn by
``hf_faithful.evaluation.plots``, as the benchmarks' figures). Everything runs offline on
CPU; ``python spaces/pruning_explorer/app.py``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from hf_faithful.corpora import calibration_text, wikitext2_test  # noqa: E402
from hf_faithful.evaluation.perplexity import perplexity, tokenize_text  # noqa: E402
from hf_faithful.evaluation.plots import (  # noqa: E402
    learning_curve_figure,
    method_label,
    perplexity_vs_sparsity_figure,
)
from hf_faithful.models import REFERENCE_MODEL_DIR, load_causal_lm, load_reference_model  # noqa: E402
from hf_faithful.pruning import PolicyGradientPruner, PrunedLlamaConfig, PruningConfig  # noqa: E402
from hf_faithful.pruning.state import load_prune_state  # noqa: E402

DEFAULT_SPARSITY = 0.3
DEFAULT_STEPS = 20
DEFAULT_PROMPT = "The history of the city"
DEFAULT_CHUNKS = 4
REPETITION_PENALTY = 1.2
_CACHE_SIZE = 4  # pruned models kept in memory (live prunes and loaded folders)
# the trade-off curve: one-shot prunes of the dense model (global budget) at these sparsities
TRADEOFF_SPARSITIES = (0.1, 0.2, 0.3, 0.5, 0.7)
TRADEOFF_METHODS = {  # benchmark method key -> hf-faithful prune --method, overrides
    "wanda_sp+comp": ("wanda-sp-global", {"compensate": True}),
    "magnitude": ("magnitude", {}),
}
TRADEOFF_CALIBRATION = 16  # calibration sequences for Wanda-sp's statistics and the biases


@dataclass
class Result:
    """A pruned model next to the dense model it came from."""

    label: str
    pruned: torch.nn.Module
    tokenizer: Any
    dense: torch.nn.Module | None
    dense_tokenizer: Any
    dense_label: str
    head_scores: list[torch.Tensor] | None = None
    channel_scores: list[torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    perplexity: dict[int, float] = field(default_factory=dict)
    # the history's eval_perplexity is on the first this-many WikiText-2 test chunks
    eval_chunks: int | None = None


_results: OrderedDict[str, Result] = OrderedDict()
_dense_ppl: dict[tuple[str, int], float] = {}
_tradeoffs: dict[tuple[str, str, int], dict[str, Any]] = {}  # quality-results dicts
_test_ids: dict[int, tuple[Any, torch.Tensor]] = {}  # id(tokenizer) -> (tokenizer, ids)
_lock = threading.Lock()  # one model job at a time: the CPU is the bottleneck anyway


def _remember(key: str, result: Result) -> Result:
    _results[key] = result
    _results.move_to_end(key)
    while len(_results) > _CACHE_SIZE:
        _results.popitem(last=False)
    return result


_reference: tuple[Any, Any] | None = None


def _reference_model():
    """The bundled dense reference model, loaded once per process."""
    global _reference
    if _reference is None:
        _reference = load_reference_model()
    return _reference


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _wikitext_ids(tokenizer) -> torch.Tensor:
    """WikiText-2 test tokenized once per tokenizer."""
    if id(tokenizer) not in _test_ids:
        _test_ids[id(tokenizer)] = (tokenizer, tokenize_text(tokenizer, wikitext2_test()))
    return _test_ids[id(tokenizer)][1]


def _ppl(model, tokenizer, max_chunks: int) -> float:
    """WikiText-2 test perplexity on the first ``max_chunks`` 128-token chunks."""
    return perplexity(
        model, input_ids=_wikitext_ids(tokenizer), max_chunks=max_chunks, progress=False
    )


# ------------------------------------------------------------------ making results
def prune_reference(
    sparsity: float, steps: int, target: str, progress: gr.Progress | None = None
) -> str:
    """Prune the bundled reference model; returns the cache key of the result."""
    key = f"live:{float(sparsity):.2f}:{int(steps)}:{target}"
    if key in _results:
        _results.move_to_end(key)
        return key
    with _lock:
        dense, tokenizer = _reference_model()
        config = PruningConfig(
            sparsity=float(sparsity),
            target=target,
            max_steps=int(steps),
            batch_size=4,
            init_num_samples=16,
            logging_steps=1,
            eval_steps=max(1, int(steps) // 5),  # ~5 points of the learning curve
            extra={"base_model": "hf-faithful reference model"},
        )
        pruner = PolicyGradientPruner(dense, tokenizer, config)
        # held out: the first WikiText-2 test chunks (the perplexity table's default)
        eval_ids = _wikitext_ids(tokenizer)[: DEFAULT_CHUNKS * config.seq_len]
        calibration = pruner.prepare_data(calibration_text())
        pruner.initialize(calibration, progress=False)
        start = {"step": 0, "eval_perplexity": pruner.evaluate(eval_ids)}
        pruner.fit(calibration, eval_data=eval_ids, progress=progress is not None)
        pruned = pruner.compress().eval()
    label = (
        f"reference model pruned live: sparsity {sparsity:.2f}, {int(steps)} policy-gradient "
        f"steps ({'one-shot Wanda-sp' if not steps else 'Wanda-sp init'}), target {target}"
    )
    _remember(
        key,
        Result(
            label=label,
            pruned=pruned,
            tokenizer=tokenizer,
            dense=dense,
            dense_tokenizer=tokenizer,
            dense_label="bundled reference model",
            head_scores=list(pruner.scores_heads.split(pruner.head_sizes)),
            channel_scores=list(pruner.scores_channels.split(pruner.channel_sizes)),
            history=[start, *pruner.history],
            eval_chunks=DEFAULT_CHUNKS,
        ),
    )
    return key


def _same_shape(a, b) -> bool:
    names = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    return all(getattr(a, n, None) == getattr(b, n, None) for n in names)


def load_pruned(source: str) -> str:
    """Load a pruned model folder or Hub id (and its dense base); returns the cache key."""
    source = (source or "").strip()
    if not source:
        raise gr.Error("Enter a pruned model folder or Hub id, or prune the reference model.")
    key = f"load:{source}"
    if key in _results:
        _results.move_to_end(key)
        return key
    with _lock:
        try:
            pruned, tokenizer = load_causal_lm(source)
        except (OSError, ValueError) as err:
            raise gr.Error(f"Could not load {source!r}: {err}") from err
        if not isinstance(pruned.config, PrunedLlamaConfig):
            raise gr.Error(
                f"{source!r} is a {type(pruned.config).__name__}, not a pruned model "
                "(config model_type 'pruned_llama')."
            )
        base = (pruned.config.pruning or {}).get("base_model")
        dense = dense_tokenizer = None
        dense_label = f"base model {base!r} is not available offline"
        if base:
            try:
                dense, dense_tokenizer = load_causal_lm(str(base))
                dense_label = str(base)
            except (OSError, ValueError):
                pass
        if dense is None:
            ref, ref_tokenizer = _reference_model()
            if _same_shape(ref.config, pruned.config.text_config):
                dense, dense_tokenizer = ref, ref_tokenizer
                dense_label = "bundled reference model (same architecture as the base)"
    head_scores = channel_scores = None
    history: list[dict[str, Any]] = []
    if Path(source).is_dir():
        try:
            tensors, metadata = load_prune_state(source)
            head_scores = list(tensors["scores_heads"].split(metadata["head_sizes"]))
            channel_scores = list(tensors["scores_channels"].split(metadata["channel_sizes"]))
            history = list(metadata.get("history", []))
        except (FileNotFoundError, KeyError):
            pass
    result = Result(
        label=f"loaded from {source}",
        pruned=pruned,
        tokenizer=tokenizer,
        dense=dense,
        dense_tokenizer=dense_tokenizer,
        dense_label=dense_label,
        head_scores=head_scores,
        channel_scores=channel_scores,
        history=history,
    )
    _remember(key, result)
    return key


def _get(key: str | None) -> Result:
    if not key or key not in _results:
        raise gr.Error("No pruned model yet: prune the reference model or load one first.")
    return _results[key]


# ------------------------------------------------------------------------ views
def layer_table(result: Result) -> list[list[Any]]:
    """Rows ``[layer, q heads, kv heads, MLP channels]`` as kept / dense."""
    config = result.pruned.config
    text = config.text_config
    dense_q = text.num_attention_heads
    dense_kv = getattr(text, "num_key_value_heads", None) or dense_q
    rows = []
    for i, (q, kv, width) in enumerate(
        zip(
            config.num_attention_heads_per_layer,
            config.num_key_value_heads_per_layer,
            config.intermediate_size_per_layer,
        )
    ):
        rows.append(
            [i, f"{q} / {dense_q}", f"{kv} / {dense_kv}", f"{width} / {text.intermediate_size}"]
        )
    return rows


def layer_figure(result: Result):
    """Kept heads and channels per layer (bars over the dense size), and the learned
    keep-probabilities of the channels when the prune state is known."""
    config = result.pruned.config
    text = config.text_config
    layers = list(range(text.num_hidden_layers))
    with_scores = result.channel_scores is not None
    fig, axes = plt.subplots(1, 3 if with_scores else 2, figsize=(13 if with_scores else 9, 3.6))
    panels = (
        ("attention heads (query)", config.num_attention_heads_per_layer, text.num_attention_heads),
        ("MLP channels", config.intermediate_size_per_layer, text.intermediate_size),
    )
    for ax, (title, kept, dense) in zip(axes, panels):
        ax.bar(layers, [dense] * len(layers), color="#e5e7eb", label="dense")
        ax.bar(layers, kept, color="#f97316", label="kept")
        for x, k in zip(layers, kept):
            ax.text(x, k, str(k), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(layers)
        ax.set_xlabel("layer")
        ax.set_title(title)
        ax.set_ylim(0, dense * 1.15)
    axes[0].legend(loc="lower right", fontsize=8)
    if with_scores:
        ax = axes[2]
        for i, scores in enumerate(result.channel_scores):
            values = torch.sort(scores.float(), descending=True).values
            ax.plot(torch.linspace(0, 1, len(values)), values, label=f"layer {i}")
        ax.set_title("learned keep-probability, MLP channels")
        ax.set_xlabel("channels of the layer (sorted)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def params_markdown(result: Result) -> str:
    after = _num_params(result.pruned)
    lines = [f"**{result.label}**", "", "| | parameters |", "|---|---|"]
    if result.dense is not None:
        before = _num_params(result.dense)
        lines.append(f"| dense ({result.dense_label}) | {before:,} |")
        lines.append(f"| pruned | {after:,} ({after / before:.1%} of dense) |")
    else:
        lines.append(f"| dense | n/a ({result.dense_label}) |")
        lines.append(f"| pruned | {after:,} |")
    if result.history:
        losses = [h["loss"] for h in result.history if "loss" in h]
        if losses:
            lines += [
                "",
                f"policy-gradient loss: {losses[0]:.3f} (first step) -> {losses[-1]:.3f} (last)",
            ]
    return "\n".join(lines)


def show(key: str):
    result = _get(key)
    return key, layer_figure(result), params_markdown(result), layer_table(result)


def measure_perplexity(key: str, max_chunks: int) -> list[list[Any]]:
    """WikiText-2 test perplexity (first ``max_chunks`` chunks of 128 tokens), dense vs pruned."""
    result = _get(key)
    n = int(max_chunks)
    with _lock:
        if n not in result.perplexity:
            result.perplexity[n] = _ppl(result.pruned, result.tokenizer, n)
        dense = None
        if result.dense is not None:
            dense_key = (result.dense_label, n)
            if dense_key not in _dense_ppl:
                _dense_ppl[dense_key] = _ppl(result.dense, result.dense_tokenizer, n)
            dense = _dense_ppl[dense_key]
    pruned = result.perplexity[n]
    fmt = lambda v: "n/a" if v is None or not math.isfinite(v) else f"{v:.2f}"  # noqa: E731
    change = f"{pruned / dense - 1:+.1%}" if dense else "n/a"
    return [[f"WikiText-2 test, {n} x 128 tokens", fmt(dense), fmt(pruned), change]]


# ---------------------------------------------------------------- trade-off curves
def learning_curve(key: str):
    """The prune's policy-gradient learning curve: loss and baseline per logged step, and
    held-out perplexity (hard masks) where the history has it, next to the dense model's."""
    result = _get(key)
    evals = [h["eval_perplexity"] for h in result.history if "eval_perplexity" in h]
    lines: dict[str, float] = {}
    n = result.eval_chunks
    if evals and n and result.dense is not None:  # the dense model on the same chunks
        dense_key = (result.dense_label, n)
        with _lock:
            if dense_key not in _dense_ppl:
                _dense_ppl[dense_key] = _ppl(result.dense, result.dense_tokenizer, n)
        lines[f"dense, WikiText-2 test {n} x 128"] = _dense_ppl[dense_key]
    logged = sum("loss" in h for h in result.history)
    title = (
        f"{result.label}: {logged} logged steps"
        if logged
        else f"{result.label}: no policy-gradient steps recorded (one-shot, or no saved history)"
    )
    return learning_curve_figure(result.history, title=title, reference_lines=lines)


def _model_sparsity(result: Result) -> tuple[float | None, str]:
    """The pruned model's sparsity and target, from its provenance."""
    info = getattr(result.pruned.config, "pruning", None) or {}
    sparsity = info.get("sparsity")
    return (float(sparsity) if sparsity is not None else None), str(info.get("target", "both"))


def tradeoff_results(result: Result, max_chunks: int) -> dict[str, Any]:
    """Perplexity of the dense model and of quick one-shot prunes of it (global budget,
    the pruned model's target) at ``TRADEOFF_SPARSITIES``, as a quality-results dict
    (``{"dense": {"ppl"}, "global/<sparsity>/<method>": {"ppl"}}``, the benchmarks'
    shape); cached per dense model, target and number of chunks."""
    if result.dense is None:
        raise gr.Error(f"No dense model to prune for the curve ({result.dense_label}).")
    _, target = _model_sparsity(result)
    n = int(max_chunks)
    cache_key = (result.dense_label, target, n)
    if cache_key in _tradeoffs:
        return _tradeoffs[cache_key]
    dense, tokenizer = result.dense, result.dense_tokenizer
    with _lock:
        dense_key = (result.dense_label, n)
        if dense_key not in _dense_ppl:
            _dense_ppl[dense_key] = _ppl(dense, tokenizer, n)
        out: dict[str, Any] = {"dense": {"ppl": _dense_ppl[dense_key]}}
        seq_len = PruningConfig().seq_len
        calibration = PolicyGradientPruner(
            dense, tokenizer, PruningConfig(seq_len=seq_len)
        ).prepare_data(calibration_text())
        for sparsity in TRADEOFF_SPARSITIES:
            for name, (method, overrides) in TRADEOFF_METHODS.items():
                config = PruningConfig.for_method(
                    method,
                    sparsity=sparsity,
                    target=target,
                    budget="global",
                    seq_len=seq_len,
                    init_num_samples=TRADEOFF_CALIBRATION,
                    **overrides,
                )
                pruner = PolicyGradientPruner(dense, tokenizer, config)
                pruner.initialize(calibration, progress=False)
                out[f"global/{sparsity}/{name}"] = {"ppl": _ppl(pruner.compress(), tokenizer, n)}
    _tradeoffs[cache_key] = out
    return out


def tradeoff(key: str, max_chunks: int):
    """Perplexity against sparsity for the model's dense base: one-shot Wanda-sp (global,
    bias compensation) and magnitude prunes, with the pruned model itself starred."""
    result = _get(key)
    n = int(max_chunks)
    results = tradeoff_results(result, n)
    with _lock:
        if n not in result.perplexity:
            result.perplexity[n] = _ppl(result.pruned, result.tokenizer, n)
    sparsity, target = _model_sparsity(result)
    points = []
    if sparsity is not None:
        points.append({"label": "this model", "sparsity": sparsity, "ppl": result.perplexity[n]})
    methods = ", ".join(method_label(m) for m in TRADEOFF_METHODS)
    title = (
        f"{result.dense_label}: WikiText-2 test perplexity ({n} x 128 tokens) of one-shot "
        f"prunes ({methods}; global budget, target {target}, {TRADEOFF_CALIBRATION} "
        "calibration sequences) and of this model"
    )
    return perplexity_vs_sparsity_figure(results, title=title, points=points, budgets=["global"])


@torch.no_grad()
def _greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(
        **inputs,
        max_new_tokens=int(max_new_tokens),
        do_sample=False,
        no_repeat_ngram_size=3,
        repetition_penalty=REPETITION_PENALTY,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(output[0], skip_special_tokens=True)


def generate(key: str, prompt: str, max_new_tokens: int) -> tuple[str, str]:
    """Greedy continuations of ``prompt`` by the dense and the pruned model."""
    if not prompt or not prompt.strip():
        raise gr.Error("prompt is empty")
    result = _get(key)
    with _lock:
        pruned = _greedy(result.pruned, result.tokenizer, prompt, max_new_tokens)
        dense = (
            _greedy(result.dense, result.dense_tokenizer, prompt, max_new_tokens)
            if result.dense is not None
            else f"(no dense model: {result.dense_label})"
        )
    return dense, pruned


# --------------------------------------------------------------------------- UI
def build_demo() -> gr.Blocks:
    """The explorer's Blocks (tests launch it headless; ``main`` serves it)."""

    def on_prune(sparsity, steps, target, progress=gr.Progress(track_tqdm=True)):
        progress(0, desc="loading the reference model")
        return show(prune_reference(sparsity, steps, target, progress))

    def on_load(source):
        return show(load_pruned(source))

    with gr.Blocks(title="hf-faithful pruning explorer") as demo:
        gr.Markdown(
            "# Pruning explorer\n"
            "Backprop-free structural pruning ([arXiv 2406.10576](https://arxiv.org/abs/2406.10576)): "
            "a policy over keep-probabilities of attention heads and MLP channels, trained "
            "with forward passes only. Prune the bundled 4M-parameter reference Llama here, "
            "or load a model saved by `PolicyGradientPruner.save_pretrained`."
        )
        key = gr.State(None)
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Prune the reference model live")
                sparsity = gr.Slider(0.0, 0.9, value=DEFAULT_SPARSITY, step=0.05, label="sparsity")
                steps = gr.Slider(
                    0, 200, value=DEFAULT_STEPS, step=1, label="policy-gradient steps (0: one-shot)"
                )
                target = gr.Radio(["both", "heads", "channels"], value="both", label="prune")
                prune_button = gr.Button("Prune", variant="primary")
            with gr.Column():
                gr.Markdown("### Or load a pruned model")
                source = gr.Textbox(
                    label="folder or Hub id",
                    placeholder="path/to/pruned-model or user/pruned-model",
                )
                load_button = gr.Button("Load")
        summary = gr.Markdown()
        plot = gr.Plot(label="kept units per layer", show_label=False)
        table = gr.Dataframe(
            headers=["layer", "query heads", "key/value heads", "MLP channels"],
            label="kept / dense, per layer",
            interactive=False,
        )
        with gr.Row():
            chunks = gr.Slider(1, 64, value=DEFAULT_CHUNKS, step=1, label="perplexity chunks")
            ppl_button = gr.Button("Measure perplexity")
        ppl_table = gr.Dataframe(
            headers=["data", "dense", "pruned", "change"], label="perplexity", interactive=False
        )
        with gr.Row():
            prompt = gr.Textbox(value=DEFAULT_PROMPT, label="prompt", scale=3)
            new_tokens = gr.Slider(1, 128, value=40, step=1, label="new tokens", scale=1)
            generate_button = gr.Button("Generate", scale=1)
        with gr.Row():
            dense_text = gr.Textbox(label="dense model", lines=4)
            pruned_text = gr.Textbox(label="pruned model", lines=4)

        with gr.Accordion("Trade-off curves", open=False):
            gr.Markdown(
                "**Learning curve** of the prune shown above: the policy-gradient loss (mean "
                "over the sampled masks) and its baseline per step, and held-out perplexity "
                f"of the hard masks (live prunes: first {DEFAULT_CHUNKS} WikiText-2 test "
                "chunks; loaded models: what their prune recorded). **Perplexity against "
                "sparsity**: quick one-shot prunes of the same dense model (Wanda-sp with "
                "bias compensation, and magnitude; global budget) at "
                + ", ".join(f"{s:.0%}" for s in TRADEOFF_SPARSITIES)
                + " on the chosen number of perplexity chunks, this model starred."
            )
            curve_plot = gr.Plot(label="policy-gradient learning curve")
            curve_button = gr.Button("Redraw learning curve", size="sm")
            tradeoff_button = gr.Button("Draw perplexity against sparsity")
            tradeoff_plot = gr.Plot(label="perplexity against sparsity")
        views = [key, plot, summary, table]
        for event in (
            prune_button.click(
                on_prune, [sparsity, steps, target], views, api_name="prune", concurrency_limit=1
            ),
            load_button.click(on_load, [source], views, api_name="load"),
            demo.load(on_prune, [sparsity, steps, target], views, api_name=False),
        ):
            event.success(learning_curve, [key], curve_plot, api_name=False).success(
                measure_perplexity, [key, chunks], ppl_table, api_name=False
            ).success(
                generate, [key, prompt, new_tokens], [dense_text, pruned_text], api_name=False
            )
        ppl_button.click(measure_perplexity, [key, chunks], ppl_table, api_name="perplexity")
        generate_button.click(
            generate, [key, prompt, new_tokens], [dense_text, pruned_text], api_name="generate"
        )
        tradeoff_button.click(
            tradeoff, [key, chunks], tradeoff_plot, api_name="tradeoff", concurrency_limit=1
        )
        curve_button.click(learning_curve, [key], curve_plot, api_name="learning_curve")
        gr.Markdown(
            f"Reference model: `{REFERENCE_MODEL_DIR.name}` (bundled). Generations are greedy "
            f"with `no_repeat_ngram_size=3`, `repetition_penalty={REPETITION_PENALTY}`; perplexity follows the paper's protocol "
            "(non-overlapping 128-token chunks of WikiText-2 test, here the first few)."
        )
    return demo


if __name__ == "__main__":
    build_demo().launch()

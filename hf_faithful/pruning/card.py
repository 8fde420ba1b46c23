"""Model card of a pruned model, rendered from ``assets/model_cards/pruned_model.md``.

Rendered with huggingface_hub's ``ModelCard.from_template``, so the YAML metadata
(base model, tags, evaluation results) is what the Hub expects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_faithful.assets import MODEL_CARDS_DIR
from hf_faithful.hub import REPO_ID_PATTERN

TEMPLATE = MODEL_CARDS_DIR / "pruned_model.md"
# What the usage snippet names when the card is written before the model has a Hub repo.
LOCAL_PLACEHOLDER = "path/to/this/folder"


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def pruned_model_card(
    config,
    *,
    params_before: int,
    params_after: int,
    perplexity: dict[str, float] | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Model card of a pruned model from its ``PrunedLlamaConfig``.

    ``perplexity`` may hold ``before`` / ``after`` WikiText-2 test perplexities; the
    ``after`` value becomes the card's evaluation result. ``repo_id`` is what the usage
    snippet loads (the folder placeholder without it). ``license`` (with ``license_name`` /
    ``license_link`` for ``"other"``) is the base model's: pruned weights are derived
    from it, so its terms carry over.
    """
    pruning: dict[str, Any] = dict(config.pruning or {})
    base_model = pruning.get("base_model") or "an unnamed model"
    on_hub = bool(REPO_ID_PATTERN.match(str(base_model))) and not Path(str(base_model)).exists()
    perplexity = perplexity or {}
    model_name = (
        repo_id.split("/")[-1]
        if repo_id
        else f"pruned-{Path(str(base_model)).name}"
        if on_hub
        else "pruned-model"
    )
    eval_results = None
    if perplexity.get("after") is not None:
        eval_results = [
            EvalResult(
                task_type="text-generation",
                dataset_type="wikitext",
                dataset_name="WikiText-2 (test, 128-token chunks)",
                dataset_config="wikitext-2-v1",
                dataset_split="test",
                metric_type="perplexity",
                metric_value=round(float(perplexity["after"]), 4),
            )
        ]
    card_data = ModelCardData(
        base_model=base_model if on_hub else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["pruned", "structured-pruning", "policy-gradient-pruning", "hf-faithful"],
        model_name=model_name,
        eval_results=eval_results,
        license=license,
        license_name=license_name,
        license_link=license_link,
    )
    layers = [
        (i, q, kv, width)
        for i, (q, kv, width) in enumerate(
            zip(
                config.num_attention_heads_per_layer,
                config.num_key_value_heads_per_layer,
                config.intermediate_size_per_layer,
            )
        )
    ]
    fmt = lambda v: f"{v:.3f}" if v is not None else None  # noqa: E731
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or TEMPLATE),
        model_name=model_name,
        base_model=base_model,
        base_model_link=f"https://huggingface.co/{base_model}" if on_hub else None,
        method=pruning.get("method", "structured pruning"),
        params_before=f"{params_before:,} ({_human(params_before)})",
        params_after=f"{params_after:,} ({_human(params_after)})",
        params_ratio=f"{params_after / max(params_before, 1):.1%}",
        ppl_before=fmt(perplexity.get("before")),
        ppl_after=fmt(perplexity.get("after")),
        pruning=pruning,
        layers=layers,
        repo_id=repo_id or LOCAL_PLACEHOLDER,
    )


def retarget_card(path: str | os.PathLike, repo_id: str) -> None:
    """Point a saved pruned-model card at ``repo_id``: its usage snippet loads the repo
    instead of the folder placeholder, and its title and ``model_name`` become the repo's
    name (as :func:`pruned_model_card` with ``repo_id`` would write them). Rewritten
    atomically; used when a saved folder is pushed."""
    if not REPO_ID_PATTERN.match(repo_id):
        raise ValueError(f"repo_id must look like 'user/name', got {repo_id!r}")
    path = Path(path)
    card = ModelCard.load(path)
    old_name, new_name = card.data.model_name, repo_id.split("/")[-1]
    card.text = card.text.replace(f'"{LOCAL_PLACEHOLDER}"', f'"{repo_id}"')
    if old_name and old_name != new_name:
        card.text = card.text.replace(f"\n# {old_name}\n", f"\n# {new_name}\n", 1)
    card.data.model_name = new_name
    tmp = path.with_name(path.name + ".tmp")
    card.save(tmp)
    os.replace(tmp, path)

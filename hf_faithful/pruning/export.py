"""What a pruning run hands over: hard masks, compressed sizes, provenance, a saved folder.

These are functions of the final scores and the config, not of the training loop, so
they live apart from it; the pruner's ``hard_masks``, ``layer_sizes``, ``provenance``,
``save_pretrained`` and ``push_to_hub`` are their public names. A saved folder holds
the compressed model (reloadable with ``from_pretrained``), the tokenizer, the prune
state (so ``PolicyGradientPruner.from_pretrained`` can resume) and a model card.

A saved folder is meant to be shared, so nothing in it names this machine: a local base
model is recorded by :func:`portable_name` (a Hub id when it is a Hub cache snapshot),
``_name_or_path`` paths leave ``config.json`` and ``tokenizer_config.json`` loses
``local_files_only`` / ``is_local`` (:func:`strip_machine_local`). The card carries the
base model's licence when its card can be read without downloading (:func:`base_license`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from hf_faithful.assets import REFERENCE_MODEL_DIR
from hf_faithful.pruning.config import PruningConfig
from hf_faithful.pruning.scores import hard_mask
from hf_faithful.pruning.state import STATE_FILE, save_prune_state
from hf_faithful.pruning.units import PrunableLayer


def final_masks(
    config: PruningConfig,
    scores_heads: torch.Tensor,
    scores_channels: torch.Tensor,
    head_sizes: list[int],
    channel_sizes: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """0/1 masks (heads, channels; flat, layer order) keeping the top scores.

    Always at the final sparsity (not the warm-up ramp's), and all ones for a pool
    that ``config.target`` leaves alone.
    """
    keep = 1.0 - config.sparsity
    per_layer = config.budget == "layer"
    heads = (
        hard_mask(
            scores_heads,
            head_sizes,
            keep,
            per_layer=per_layer,
            min_per_layer=config.min_heads_per_layer,
        )
        if config.target in ("heads", "both")
        else torch.ones(sum(head_sizes))
    )
    channels = (
        hard_mask(scores_channels, channel_sizes, keep, per_layer=per_layer, min_per_layer=0)
        if config.target in ("channels", "both")
        else torch.ones(sum(channel_sizes))
    )
    return heads, channels


def compressed_sizes(
    layers: Sequence[PrunableLayer],
    heads: torch.Tensor,
    channels: torch.Tensor,
    head_sizes: list[int],
    channel_sizes: list[int],
) -> dict[str, list[int]]:
    """Per-layer sizes a model compressed with these masks will have."""
    kv = [int(p.sum()) for p in heads.split(head_sizes)]
    return {
        "num_key_value_heads": kv,
        "num_attention_heads": [n * layer.group_size for n, layer in zip(kv, layers)],
        "intermediate_size": [int(p.sum()) for p in channels.split(channel_sizes)],
    }


REFERENCE_MODEL_NAME = "hf-faithful reference model"  # how the CLIs name the bundled model
# tokenizer_config.json keys that describe how this machine loaded the tokenizer
_LOCAL_TOKENIZER_KEYS = ("local_files_only", "is_local", "cache_dir", "_commit_hash")
# a folder of the Hub cache: .../models--{org}--{name}/snapshots/{revision}[/...]
_HUB_SNAPSHOT = re.compile(r"(?:^|/)models--(?P<org>.+?)--(?P<name>[^/]+)/snapshots/[^/]+")


def _is_local(name_or_path: str) -> bool:
    return (
        os.path.isabs(name_or_path)
        or name_or_path.startswith((".", "~"))
        or (os.path.exists(name_or_path))
    )


def hub_id(name_or_path: str | os.PathLike | None) -> str | None:
    """The Hub id ``name_or_path`` stands for: itself when it is no local path, the repo of
    a Hub cache snapshot folder, else None."""
    if not name_or_path:
        return None
    text = os.fspath(name_or_path)
    if not _is_local(text):
        return text
    found = _HUB_SNAPSHOT.search(Path(text).expanduser().resolve().as_posix())
    return f"{found['org']}/{found['name']}" if found else None


def portable_name(name_or_path: str | os.PathLike | None) -> str | None:
    """How to name a base model outside this machine: its Hub id (a cache snapshot folder
    included), the bundled reference model by name, another local folder as ``"local model
    <folder name>"`` (never a path, and never mistakable for a Hub id); None for none."""
    if not name_or_path:
        return None
    found = hub_id(name_or_path)
    if found is not None:
        return found
    path = Path(os.fspath(name_or_path)).expanduser().resolve()
    if path == REFERENCE_MODEL_DIR.resolve():
        return REFERENCE_MODEL_NAME
    return f"local model {path.name}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _strip_paths(value: Any) -> Any:
    """``value`` with every ``_name_or_path`` / ``name_or_path`` that is a local path
    replaced by its Hub id, or dropped when it has none (at any depth: text_config too)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("_name_or_path", "name_or_path") and isinstance(item, str) and item:
                item = hub_id(item)
                if item is None:
                    continue
            out[key] = _strip_paths(item)
        return out
    if isinstance(value, list):
        return [_strip_paths(item) for item in value]
    return value


def strip_machine_local(folder: str | os.PathLike) -> None:
    """Remove what only this machine understands from a saved folder's ``config.json``
    (local ``_name_or_path`` paths) and ``tokenizer_config.json`` (those, plus
    ``local_files_only`` / ``is_local`` / ``cache_dir``); rewritten atomically."""
    folder = Path(folder)
    config = folder / "config.json"
    if config.is_file():
        _write_json(config, _strip_paths(json.loads(config.read_text())))
    tokenizer = folder / "tokenizer_config.json"
    if tokenizer.is_file():
        data = _strip_paths(json.loads(tokenizer.read_text()))
        _write_json(tokenizer, {k: v for k, v in data.items() if k not in _LOCAL_TOKENIZER_KEYS})


def base_license(model: torch.nn.Module, base_model: str | None = None) -> dict[str, str]:
    """``license`` (and ``license_name`` / ``license_link`` for custom licences) of the base
    model, read from its card: in its local folder, or for a Hub id in the local Hub cache
    (nothing is downloaded); else a ``license`` in its config; ``{}`` when unknown."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.repocard import metadata_load

    config = getattr(model, "config", None)
    local = getattr(config, "_name_or_path", "") or ""
    readmes = []
    if local and Path(local).is_dir():
        readmes.append(Path(local) / "README.md")
    for name in dict.fromkeys(n for n in (hub_id(local), hub_id(base_model)) if n):
        try:
            cached = try_to_load_from_cache(name, "README.md")
        except ValueError:  # not a valid repo id
            cached = None
        if isinstance(cached, str):
            readmes.append(Path(cached))
    for readme in readmes:
        if not readme.is_file():
            continue
        metadata = metadata_load(readme) or {}
        if metadata.get("license"):
            keys = ("license", "license_name", "license_link")
            return {k: str(metadata[k]) for k in keys if metadata.get(k)}
    licence = getattr(config, "license", None)
    return {"license": str(licence)} if licence else {}


def provenance(model: torch.nn.Module, config: PruningConfig, step: int) -> dict[str, Any]:
    """How the pruned model was made; stored in its config and shown on its card. The base
    model is named portably (a local path would mean nothing elsewhere)."""
    base = getattr(getattr(model, "config", None), "_name_or_path", "") or None
    return {
        "base_model": portable_name(config.extra.get("base_model", base)),
        "method": f"policy_gradient (init={config.init})"
        if config.max_steps
        else f"one-shot {config.init}",
        "sparsity": config.sparsity,
        "target": config.target,
        "budget": config.budget,
        "steps": step,
        "num_samples": config.num_samples,
        "seed": config.seed,
        "library": "hf-faithful",
        "paper": "arXiv:2406.10576",
    }


def write_pruned_folder(
    save_directory: str | os.PathLike,
    pruned: torch.nn.Module,
    *,
    dense_model: torch.nn.Module,
    tokenizer,
    state: tuple[dict[str, torch.Tensor], dict[str, Any]],
    perplexity: dict[str, float] | None = None,
    repo_id: str | None = None,
) -> None:
    """Write the compressed model, tokenizer, prune ``state`` and model card, with nothing
    machine-local in the configs (:func:`strip_machine_local`).

    ``dense_model`` is counted for the card's before/after parameter numbers, and its card
    gives the licence (:func:`base_license`); ``repo_id`` goes into the card's usage snippet.
    """
    from hf_faithful.pruning.card import pruned_model_card

    save_directory = Path(save_directory)
    pruned.save_pretrained(save_directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(save_directory)
    strip_machine_local(save_directory)
    save_prune_state(*state, save_directory / STATE_FILE)
    card = pruned_model_card(
        pruned.config,
        params_before=sum(p.numel() for p in dense_model.parameters()),
        params_after=sum(p.numel() for p in pruned.parameters()),
        perplexity=perplexity,
        repo_id=repo_id,
        **base_license(dense_model, (pruned.config.pruning or {}).get("base_model")),
    )
    card.save(save_directory / "README.md")


def push_saved(
    save: Callable[[str], Any],
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str,
) -> str:
    """Run ``save(folder)`` into a temporary folder and upload it; returns the commit URL.
    The card's usage snippet and title name ``repo_id`` (see :func:`retarget_card`)."""
    from hf_faithful.hub import REPO_ID_PATTERN, push_folder
    from hf_faithful.pruning.card import retarget_card

    if not repo_id or not REPO_ID_PATTERN.match(repo_id):
        raise ValueError(f"repo_id must look like 'user/name', got {repo_id!r}")
    with tempfile.TemporaryDirectory() as tmp:
        save(tmp)
        if (Path(tmp) / "README.md").is_file():
            retarget_card(Path(tmp) / "README.md", repo_id)
        return push_folder(
            tmp, repo_id, private=private, token=token, commit_message=commit_message
        )

"""Causal-LM loading, and the bundled reference model: a small Llama with grouped-query
attention, trained here.

It is the default model of every command that needs one. See its model card
(``REFERENCE_MODEL_DIR / "README.md"``) for data, command, seed and perplexity.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hf_faithful.assets import REFERENCE_MODEL_DIR

__all__ = ["REFERENCE_MODEL_DIR", "load_causal_lm", "load_reference_model"]


def load_reference_model(dtype: torch.dtype = torch.float32, device: str | None = None):
    """Load the bundled reference model and its tokenizer: ``(model, tokenizer)``."""
    return load_causal_lm(str(REFERENCE_MODEL_DIR), dtype=dtype, device=device)


def load_causal_lm(
    name_or_path: str | None,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | None = None,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
):
    """Load a causal LM and tokenizer from a local folder or a Hub id.

    ``None`` means the bundled reference model. A path that looks local but does not
    exist raises ``FileNotFoundError`` naming it, instead of a Hub lookup error.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Pruned folders load without remote code: hf_faithful.models (imported before
    # this module, as its package) registered PrunedLlamaConfig with the Auto classes.

    if name_or_path is None:
        name_or_path = str(REFERENCE_MODEL_DIR)
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise FileNotFoundError(f"model path does not exist: {name_or_path}")
    if looks_local and not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in model folder: {name_or_path}")
    source = str(path) if looks_local else name_or_path
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if device is not None and device_map is None:
        model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer

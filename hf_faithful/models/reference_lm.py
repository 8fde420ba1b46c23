"""Causal-LM loading, and the bundled reference model: a small Llama with grouped-query
attention, trained here.

It is the default model of every command that needs one. See its model card
(``REFERENCE_MODEL_DIR / "README.md"``) for data, command, seed and perplexity.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hf_faithful.assets import REFERENCE_MODEL_DIR

__all__ = ["REFERENCE_MODEL_DIR", "load_causal_lm", "load_gguf", "load_reference_model"]


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
    """Load a causal LM and tokenizer from a local folder, a Hub id or a ``.gguf`` file.

    ``None`` means the bundled reference model. A path that looks local but does not
    exist raises ``FileNotFoundError`` naming it, instead of a Hub lookup error. A GGUF
    file (llama.cpp's format; needs ``pip install 'hf-faithful[gguf]'``) is dequantized
    to ``dtype`` and returned as an ordinary model that ``save_pretrained`` accepts.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Pruned folders load without remote code: hf_faithful.models (imported before
    # this module, as its package) registered PrunedLlamaConfig with the Auto classes.

    if name_or_path is None:
        name_or_path = str(REFERENCE_MODEL_DIR)
    if str(name_or_path).lower().endswith(".gguf"):
        return load_gguf(name_or_path, dtype=dtype, device=device, device_map=device_map)
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


def load_gguf(
    path: str | Path,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | None = None,
    device_map: str | dict | None = None,
):
    """``(model, tokenizer)`` from a local GGUF file, dequantized to ``dtype``.

    transformers reads GGUF through ``from_pretrained(folder, gguf_file=name)``, which
    dequantizes every tensor (to float32 unless told otherwise) but marks the model as
    GGUF-loaded, and its ``save_pretrained`` then refuses it. The weights are moved into
    a model built plainly from the same config, which saves, prunes and compresses like
    any other.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file does not exist: {path}")
    try:
        import gguf  # noqa: F401 - transformers' GGUF reader needs it
    except ImportError as exc:
        raise ImportError(
            f"loading {path.name} needs the gguf package: pip install 'hf-faithful[gguf]'"
        ) from exc
    folder, name = str(path.parent), path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    config = loaded.config
    config._name_or_path = str(path)
    if hasattr(config, "quantization_config"):  # dequantized: nothing quantized is left
        del config.quantization_config
    kwargs = {"dtype": dtype} if not isinstance(dtype, str) else {}
    model = AutoModelForCausalLM.from_config(config, **kwargs)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"{path.name}: GGUF weights do not fit {type(model).__name__} (missing "
            f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    model.tie_weights()
    del loaded
    if device_map is not None:
        from accelerate import dispatch_model, infer_auto_device_map

        if device_map == "auto":
            device_map = infer_auto_device_map(
                model, no_split_module_classes=model._no_split_modules
            )
        model = dispatch_model(model, device_map=device_map)
    elif device is not None:
        model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer

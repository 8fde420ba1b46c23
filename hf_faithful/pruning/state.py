"""Prune state on disk: scores, hard masks, step, baseline and RNG state (safetensors).

One format serves three uses: the resumable checkpoint written during ``fit``
(``checkpoint.safetensors``), the state saved next to a pruned model
(``prune_state.safetensors``), and the warm start of ``init="state"``. Tensors go
into the safetensors body, everything else into one JSON metadata entry. Writes are
atomic (a temporary file, then ``os.replace``), so a killed run never leaves half a
checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

STATE_FILE = "prune_state.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
_METADATA_KEY = "hf_faithful"


def save_prune_state(
    tensors: dict[str, torch.Tensor], metadata: dict[str, Any], path: str | os.PathLike
) -> Path:
    """Write ``tensors`` and JSON ``metadata`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        str(tmp),
        metadata={_METADATA_KEY: json.dumps(metadata)},
    )
    os.replace(tmp, path)
    return path


def state_file(path: str | os.PathLike) -> Path:
    """Where :func:`save_prune_state` writes for ``path``: a folder (or a name without
    suffix) gets ``STATE_FILE`` inside it."""
    path = Path(path)
    return path / STATE_FILE if path.is_dir() or not path.suffix else path


def load_prune_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a prune state file, a checkpoint, or a pruned-model folder."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / STATE_FILE, path / CHECKPOINT_FILE]
        path = next((p for p in candidates if p.is_file()), candidates[0])
    if not path.is_file():
        raise FileNotFoundError(f"no prune state at {path}")
    with safe_open(str(path), framework="pt") as f:
        metadata = json.loads((f.metadata() or {}).get(_METADATA_KEY, "{}"))
    return load_file(str(path)), metadata

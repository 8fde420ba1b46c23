"""DeepEyes-style datasets for SCCM training: image, question, answer -> GRPO rows.

Accepts the simple layout (``image``, ``question``, ``answer`` columns) and DeepEyes'
released parquet layout (``images`` list, ``extra_info.question``,
``reward_model.ground_truth``), from a parquet file, a folder saved with
``Dataset.save_to_disk``, or an in-memory ``datasets.Dataset``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from datasets import Dataset, Image, load_dataset, load_from_disk

from hf_faithful.mcot.messages import DEEPEYES_SYSTEM_PROMPT

__all__ = ["DEEPEYES_SYSTEM_PROMPT", "load_deepeyes"]


_IMAGE_TAG = re.compile(r"<image>\s*")


def _first(row: dict[str, Any], *paths: str) -> Any:
    """The first non-empty value among dotted ``paths`` (``"reward_model.ground_truth"``)."""
    for path in paths:
        value: Any = row
        for key in path.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is not None and value != "" and value != []:
            return value
    return None


def _to_row(row: dict[str, Any], system_prompt: str | None) -> dict[str, Any]:
    question = _first(row, "question", "extra_info.question", "problem")
    if question is None and isinstance(row.get("prompt"), list):  # DeepEyes: prompt messages
        users = [m for m in row["prompt"] if isinstance(m, Mapping) and m.get("role") == "user"]
        question = users[-1]["content"] if users else None
    if question is None:
        raise ValueError(
            f"row has no question (looked for question, extra_info.question, problem, prompt): {sorted(row)}"
        )
    question = _IMAGE_TAG.sub("", str(question)).strip()
    image = row.get("image")
    if image is None and row.get("images"):
        image = row["images"][0]
    if image is None:
        raise ValueError(f"row has no image (looked for image, images): {sorted(row)}")
    answer = _first(row, "answer", "reward_model.ground_truth", "extra_info.answer", "solution")
    prompt = [{"role": "system", "content": system_prompt}] if system_prompt else []
    prompt.append({"role": "user", "content": question})
    return {
        "prompt": prompt,
        "image": image,
        "question": question,
        "answer": None if answer is None else str(answer),
    }


def load_deepeyes(
    source: str | os.PathLike | Dataset,
    split: str = "train",
    system_prompt: str | None = DEEPEYES_SYSTEM_PROMPT,
    num_proc: int | None = None,
) -> Dataset:
    """Load DeepEyes-style data as GRPO rows: ``prompt`` (system + user question), ``image``
    (decoded by ``datasets``), ``question`` and ``answer`` (``None`` where missing: the
    sufficiency reward then compares with the rollout's own answer).

    Args:
        source: a ``.parquet`` file (or glob), a ``save_to_disk`` folder, or a ``Dataset``.
        split: split to take from a parquet source.
        system_prompt: DeepEyes-like instructions for the tool; ``None`` for no system turn.
    """
    if isinstance(source, Dataset):
        dataset = source
    else:
        path = os.fspath(source)
        if os.path.isdir(path):
            dataset = load_from_disk(path)
        elif path.endswith(".parquet") or "*" in path:
            dataset = load_dataset("parquet", data_files={split: path}, split=split)
        else:
            raise ValueError(
                f"source must be a .parquet file, a save_to_disk folder or a Dataset, got {path!r}"
            )
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    columns = dataset.column_names
    rows = dataset.map(
        lambda row: _to_row(row, system_prompt),
        remove_columns=columns,
        num_proc=num_proc,
        desc="DeepEyes rows",
    )
    return rows.cast_column("image", Image())

"""DeepEyes-style datasets for SCCM training: image, question, answer -> GRPO rows.

Accepts the simple layout (``image``, ``question``, ``answer`` columns) and DeepEyes'
released parquet layout (``images`` list, ``extra_info.question``,
``reward_model.ground_truth``), from a parquet file, a folder saved with
``Dataset.save_to_disk``, or an in-memory ``datasets.Dataset``. ``with_prompt_column`` adds
the conversational ``prompt`` TRL needs to a dataset that has only the simple columns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from datasets import Dataset, Image, load_dataset, load_from_disk

from hf_faithful.mcot.messages import DEEPEYES_SYSTEM_PROMPT

__all__ = ["DEEPEYES_SYSTEM_PROMPT", "load_deepeyes", "with_prompt_column"]


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


def _prompt(question: str, system_prompt: str | None) -> list[dict[str, str]]:
    """The conversational prompt of a row: the system turn (if any), then the question."""
    prompt = [{"role": "system", "content": system_prompt}] if system_prompt else []
    prompt.append({"role": "user", "content": question})
    return prompt


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
    return {
        "prompt": _prompt(question, system_prompt),
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


def with_prompt_column(
    dataset: Any,
    question_column: str = "question",
    system_prompt: str | None = DEEPEYES_SYSTEM_PROMPT,
    name: str = "train_dataset",
) -> Any:
    """``dataset`` with a conversational ``prompt`` column built from ``question_column``
    (system turn + question, as :func:`load_deepeyes` builds it) when it has none.

    TRL needs ``prompt``; without it a multimodal row fails deep in the first step with a
    misleading "a chat template was applied" error. A dataset without either column is a
    ValueError naming both; one whose columns are unknown (a torch dataset, a streaming one
    without features) is returned as is.
    """
    if isinstance(dataset, Mapping):  # several eval datasets by name
        return {
            key: with_prompt_column(value, question_column, system_prompt, f"{name}[{key!r}]")
            for key, value in dataset.items()
        }
    columns = getattr(dataset, "column_names", None)
    if not columns or "prompt" in columns:
        return dataset
    if question_column not in columns:
        raise ValueError(
            f"{name} needs a conversational 'prompt' column, or a {question_column!r} column "
            f"(SCCMConfig.question_column) to build it from; its columns are {sorted(columns)}"
        )

    def add_prompt(row: dict[str, Any]) -> dict[str, Any]:
        question = _IMAGE_TAG.sub("", str(row[question_column])).strip()
        return {"prompt": _prompt(question, system_prompt)}

    return dataset.map(add_prompt)

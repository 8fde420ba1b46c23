"""DeepEyes-style datasets for SCCM training: image, question, answer -> GRPO rows.

Accepts the simple layout (``image``, ``question``, ``answer`` columns) and DeepEyes'
released parquet layout, from a parquet file (or glob), a folder saved with
``Dataset.save_to_disk``, a Hub dataset id, or an in-memory ``datasets.Dataset``.
``with_prompt_column`` adds the conversational ``prompt`` TRL needs to a dataset that has
only the simple columns.

DeepEyes' layout (``ChenShawn/DeepEyes-Datasets-47k``, written by DeepEyes'
``verl/workers/agent/envs/mm_process_engine/create_train_dataset.py``; fixtures and the
full schema in ``tests/fixtures/deepeyes/make_fixtures.py``): ``data_source`` (str),
``prompt`` (system turn with DeepEyes' tool schema, then ``"<image>\n\nQuestion:\n" +
question + instructions``), ``images`` (list of ``{"bytes", "path"}`` structs: the encoded
image, and a path on DeepEyes' machines that is never read), ``ability``, ``env_name``
(``"visual_toolbox_v2"`` for tool rows), ``reward_model`` (``{"style", "ground_truth"}``)
and ``extra_info`` (``{"split", "index", "answer", "question"}``). The clean question comes
from ``extra_info.question``, the reference from ``reward_model.ground_truth``, the image
from the bytes of ``images[0]``; the prompt is rebuilt with hf-faithful's system prompt
(the tool schema is rendered by the chat template from the environment's tool).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset, Image, load_dataset, load_from_disk
from datasets.fingerprint import Hasher

from hf_faithful.hub import REPO_ID_PATTERN
from hf_faithful.mcot.messages import DEEPEYES_SYSTEM_PROMPT

__all__ = ["DEEPEYES_SYSTEM_PROMPT", "load_deepeyes", "with_prompt_column"]


_IMAGE_TAG = re.compile(r"<image>\s*")
_MODULE_SOURCE = Path(__file__).read_bytes()


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
    out = {
        "prompt": _prompt(question, system_prompt),
        "image": image,
        "question": question,
        "answer": None if answer is None else str(answer),
    }
    if (
        "data_source" in row
    ):  # DeepEyes' subset ("vstar", "chart", "thinklite_eureka"), to filter on
        out["data_source"] = row["data_source"]
    return out


def _load_source(path: str, split: str, data_files: str | list[str] | None) -> Dataset:
    if os.path.isdir(path):
        return load_from_disk(path)
    if path.endswith(".parquet") or "*" in path:
        return load_dataset("parquet", data_files={split: path}, split=split)
    if REPO_ID_PATTERN.match(path) and not os.path.exists(path):
        try:
            return load_dataset(path, data_files=data_files, split=split)
        except Exception as err:  # offline, unknown repo, no such split: say what was tried
            raise ValueError(
                f"source {path!r} is no local parquet file or save_to_disk folder, and loading it "
                f"as a Hub dataset failed: {err}"
            ) from err
    raise ValueError(
        "source must be a .parquet file (or glob), a save_to_disk folder, a Hub dataset id or a "
        f"Dataset, got {path!r}"
    )


def load_deepeyes(
    source: str | os.PathLike | Dataset,
    split: str = "train",
    system_prompt: str | None = DEEPEYES_SYSTEM_PROMPT,
    num_proc: int | None = None,
    data_files: str | list[str] | None = None,
) -> Dataset:
    """Load DeepEyes-style data as GRPO rows: ``prompt`` (system + user question), ``image``
    (decoded by ``datasets``), ``question`` and ``answer`` (``None`` where missing: the
    sufficiency reward then compares with the rollout's own answer), plus ``data_source``
    when the source has it (DeepEyes' subsets, e.g. to leave out ``"thinklite_eureka"``
    math rows, which DeepEyes trains without the tool).

    Args:
        source: a ``.parquet`` file (or glob), a ``save_to_disk`` folder, a Hub dataset id
            (e.g. ``"ChenShawn/DeepEyes-Datasets-47k"``), or a ``Dataset``.
        split: split to take from a parquet source or Hub dataset.
        system_prompt: DeepEyes-like instructions for the tool; ``None`` for no system turn.
        data_files: files of a Hub dataset to load (e.g. one DeepEyes shard,
            ``"data_0.1.2_visual_toolbox_v2.parquet"``); all by default.
    """
    if isinstance(source, Dataset):
        dataset = source
    else:
        dataset = _load_source(os.fspath(source), split, data_files)
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    columns = dataset.column_names
    # The cache key covers this module's code: datasets hashes the lambda, not the helpers
    # it calls, so a changed conversion would otherwise reuse rows cached by an older one.
    fingerprint = Hasher.hash(
        (getattr(dataset, "_fingerprint", None), _MODULE_SOURCE, system_prompt)
    )
    rows = dataset.map(
        lambda row: _to_row(row, system_prompt),
        remove_columns=columns,
        num_proc=num_proc,
        desc="DeepEyes rows",
        new_fingerprint=fingerprint,
    )
    order = ["prompt", "image", "question", "answer", "data_source"]
    rows = rows.select_columns([c for c in order if c in rows.column_names])
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

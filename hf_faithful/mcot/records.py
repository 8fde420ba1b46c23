"""JSON / JSONL files of traces and of questions: one reader (:func:`read_records`) for
both, so a file is read once even when the caller first looks at what it holds (the
``faithfulness`` CLI takes traces or questions), and the writer of trace files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_faithful.mcot.images import load_image
from hf_faithful.mcot.parsing import trace_from_record
from hf_faithful.mcot.trace import Trace
from hf_faithful.mcot.zoom import BoxRules

__all__ = [
    "Record",
    "load_questions",
    "load_traces",
    "questions_from_records",
    "read_records",
    "save_traces",
    "traces_from_records",
]


@dataclass
class Record:
    """One record of a JSON / JSONL file: where it is (``"file.jsonl:3"``,
    ``"file.json[0]"``), its value, or the reason its line is not JSON."""

    source: str
    value: Any = None
    error: str | None = None


def read_records(path: str | os.PathLike, what: str = "records") -> list[Record]:
    """Every record of a ``.jsonl`` file (one per line, blank lines skipped, a line that
    is not JSON kept with its ``error``) or of a ``.json`` list (or ``{"traces": [...]}``).

    Raises FileNotFoundError naming ``what`` the file should hold, and ValueError when a
    ``.json`` file is not JSON or not a list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
        if isinstance(data, Mapping) and isinstance(data.get("traces"), list):
            data = data["traces"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: a .json {what} file must hold a list of records")
        return [Record(f"{path.name}[{i}]", value) for i, value in enumerate(data)]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{path.name}:{number}"
        try:
            records.append(Record(source, json.loads(line)))
        except json.JSONDecodeError as err:
            records.append(Record(source, error=f"invalid JSON: {err.msg}"))
    return records


def traces_from_records(
    records: Iterable[Record],
    *,
    base_dir: str | os.PathLike | None = None,
    rules: BoxRules | None = None,
    max_tool_calls: int | None = None,
) -> list[Trace]:
    """A Trace per record, bad ones included (``errors`` set, ``source`` = the record's)."""
    kwargs = {"base_dir": base_dir, "rules": rules, "max_tool_calls": max_tool_calls}
    return [
        Trace("", None, errors=[r.error], source=r.source)
        if r.error is not None
        else trace_from_record(r.value, source=r.source, **kwargs)
        for r in records
    ]


def load_traces(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    rules: BoxRules | None = None,
    max_tool_calls: int | None = None,
) -> list[Trace]:
    """Read traces from a ``.jsonl`` file (one record per line) or a ``.json`` list.

    Every record becomes a Trace, bad ones included (``errors`` set, ``source`` =
    ``"file:line"``), so a caller can report each bad line instead of stopping at the
    first. Image paths are relative to ``image_root`` (default: the file's folder).
    """
    records = read_records(path, "traces")
    base_dir = Path(image_root) if image_root is not None else Path(path).parent
    return traces_from_records(
        records, base_dir=base_dir, rules=rules, max_tool_calls=max_tool_calls
    )


def questions_from_records(
    records: Iterable[Record], base_dir: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """``{"id", "image" (loaded), "question", "reference", "source"}`` samples for trace
    generation; raises ValueError naming the first bad record."""
    out = []
    for record in records:
        if record.error is not None:
            raise ValueError(f"{record.source}: {record.error}")
        value = record.value
        if not isinstance(value, Mapping) or "question" not in value or "image" not in value:
            raise ValueError(f"{record.source}: a question record needs 'question' and 'image'")
        reference = value.get("reference", value.get("answer"))
        out.append(
            {
                "id": str(value.get("id", record.source)),
                "image": load_image(value["image"], base_dir),
                "question": str(value["question"]),
                "reference": None if reference is None else str(reference),
                "source": record.source,
            }
        )
    return out


def load_questions(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """Read ``{"id", "image", "question", "reference" | "answer"}`` records (JSONL or JSON
    list) for trace generation; images are loaded, paths relative to the file's folder."""
    records = read_records(path, "questions")
    return questions_from_records(records, Path(image_root) if image_root else Path(path).parent)


def save_traces(traces: Iterable[Trace], path: str | os.PathLike) -> None:
    """Write traces as JSONL with their images as PNG files next to it (atomic); read
    them back with :func:`load_traces`."""
    path = Path(path)
    image_dir = path.parent / f"{path.stem}_images"
    image_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for i, trace in enumerate(traces):
            record = trace.to_dict(image_dir=image_dir)
            if "image" in record and not record["image"].startswith("data:"):
                record["image"] = f"{image_dir.name}/{record['image']}"
            record["id"] = record["id"] if record["id"] is not None else str(i)
            handle.write(json.dumps(record) + "\n")
    os.replace(tmp, path)

"""JSON / JSONL files of traces and of questions: one reader (:func:`read_records`) for
both, so a file is read once even when the caller first looks at what it holds (the
``faithfulness`` CLI takes traces or questions), and the writer of trace files.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_faithful.mcot.images import DEFAULT_MAX_IMAGE_PIXELS, load_image
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
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[Trace]:
    """A Trace per record, bad ones included (``errors`` set, ``source`` = the record's)."""
    kwargs = {
        "base_dir": base_dir,
        "rules": rules,
        "max_tool_calls": max_tool_calls,
        "max_image_pixels": max_image_pixels,
    }
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
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[Trace]:
    """Read traces from a ``.jsonl`` file (one record per line) or a ``.json`` list.

    Every record becomes a Trace, bad ones included (``errors`` set, ``source`` =
    ``"file:line"``), so a caller can report each bad line instead of stopping at the
    first; an image over ``max_image_pixels`` pixels is such an error. Image paths are
    relative to ``image_root`` (default: the file's folder).
    """
    records = read_records(path, "traces")
    base_dir = Path(image_root) if image_root is not None else Path(path).parent
    return traces_from_records(
        records,
        base_dir=base_dir,
        rules=rules,
        max_tool_calls=max_tool_calls,
        max_image_pixels=max_image_pixels,
    )


def _question(
    record: Record, base_dir: str | os.PathLike | None, max_image_pixels: int | None
) -> dict[str, Any]:
    if record.error is not None:
        raise ValueError(record.error)
    value = record.value
    if not isinstance(value, Mapping) or "question" not in value or "image" not in value:
        raise ValueError("a question record needs 'question' and 'image'")
    reference = value.get("reference", value.get("answer"))
    try:
        image = load_image(value["image"], base_dir, max_image_pixels=max_image_pixels)
    except (ValueError, OSError) as err:
        raise ValueError(f"image: {err}") from None
    return {
        "id": str(value.get("id", record.source)),
        "image": image,
        "question": str(value["question"]),
        "reference": None if reference is None else str(reference),
        "source": record.source,
    }


def questions_from_records(
    records: Iterable[Record],
    base_dir: str | os.PathLike | None = None,
    *,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[dict[str, Any]]:
    """``{"id", "image" (loaded), "question", "reference", "source"}`` samples for trace
    generation.

    A bad record (not JSON, no question or image, an unreadable image or one over
    ``max_image_pixels`` pixels) is skipped with a warning naming it (``"file:line:
    why"``), so one bad line does not stop a run, as with trace files; ValueError when
    there were records but none is usable.
    """
    out, skipped = [], 0
    for record in records:
        try:
            out.append(_question(record, base_dir, max_image_pixels))
        except ValueError as err:
            skipped += 1
            warnings.warn(f"{record.source}: {err}; question skipped", stacklevel=2)
    if skipped and not out:
        raise ValueError(f"none of the {skipped} question records is usable (see the warnings)")
    return out


def load_questions(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[dict[str, Any]]:
    """Read ``{"id", "image", "question", "reference" | "answer"}`` records (JSONL or JSON
    list) for trace generation; images are loaded, paths relative to the file's folder;
    bad records are skipped with a warning (see :func:`questions_from_records`)."""
    records = read_records(path, "questions")
    base_dir = Path(image_root) if image_root else Path(path).parent
    return questions_from_records(records, base_dir, max_image_pixels=max_image_pixels)


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

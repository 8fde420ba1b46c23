"""A backend wrapper that stores answers in a JSONL file as they arrive, so that an
interrupted measurement resumes where it stopped and a rerun asks nothing twice."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from hf_faithful.mcot.backends import AnswerBackend, BackendError, Prompt, answer_each

__all__ = ["CachedBackend"]


def _prompt_key(
    prompt: Prompt, namespace: str, max_new_tokens: int, stop: Sequence[str] | None
) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, Image.Image):
            digest = hashlib.sha1(value.tobytes()).hexdigest()
            return {"image": digest, "size": value.size, "mode": value.mode}
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    data = {"namespace": namespace, "prompt": plain(prompt), "max_new_tokens": max_new_tokens}
    data["stop"] = list(stop or [])
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class CachedBackend:
    """Store a backend's answers in a JSONL file as they arrive, so that an interrupted
    measurement resumes where it stopped and a rerun asks nothing twice.

    Answers are keyed by ``namespace`` (name the model: a cache does not know when
    weights change), the prompt (images by content hash), ``max_new_tokens`` and ``stop``.
    Each chunk of ``chunk_size`` answers is appended and flushed before the next is asked;
    a line torn by a crash is ignored when the file is read back. A failed request
    (:meth:`answer_each`) is not stored, so a rerun asks it again.
    """

    def __init__(
        self,
        backend: AnswerBackend,
        path: str | os.PathLike,
        *,
        namespace: str = "",
        chunk_size: int = 64,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.backend = backend
        self.path = Path(path)
        self.namespace = namespace
        self.chunk_size = chunk_size
        self.cache: dict[str, str] = {}
        self._torn = False  # the file ends in the middle of a line: start a new one
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            self._torn = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                    self.cache[record["key"]] = record["reply"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn last line from an interrupted run

    def answer(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int = 128,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        """The replies, from the cache or the backend; a failed request raises."""
        replies = self._answer(prompts, max_new_tokens, stop, each=False)
        return replies  # type: ignore[return-value]

    def answer_each(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int = 128,
        stop: Sequence[str] | None = None,
    ) -> list[str | BackendError]:
        """As :func:`~hf_faithful.mcot.backends.answer_each` of the wrapped backend."""
        return self._answer(prompts, max_new_tokens, stop, each=True)

    def _answer(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int,
        stop: Sequence[str] | None,
        *,
        each: bool,
    ) -> list[str | BackendError]:
        keys = [_prompt_key(p, self.namespace, max_new_tokens, stop) for p in prompts]
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self.cache:
                todo.setdefault(key, i)
        pending = list(todo.items())
        failed: dict[str, BackendError] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(pending), self.chunk_size):
            chunk = pending[start : start + self.chunk_size]
            asked = [prompts[i] for _, i in chunk]
            if each:
                replies = answer_each(self.backend, asked, max_new_tokens, stop)
            else:
                replies = self.backend.answer(asked, max_new_tokens, stop)
            with open(self.path, "a", encoding="utf-8") as handle:
                if self._torn:
                    handle.write("\n")
                    self._torn = False
                for (key, _), reply in zip(chunk, replies):
                    if isinstance(reply, BackendError):
                        failed[key] = reply
                        continue
                    self.cache[key] = reply
                    handle.write(json.dumps({"key": key, "reply": reply}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        return [failed[key] if key in failed else self.cache[key] for key in keys]

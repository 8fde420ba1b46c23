"""Backends that answer multimodal chat prompts: a local transformers model or an OpenAI-compatible
endpoint behind one small protocol, used for the model under test, the judge, the
reasoning rewriter and SCCM's sufficiency answerer.

A prompt is a list of chat messages whose ``content`` is a string or a list of parts
``{"type": "text", "text": ...}`` / ``{"type": "image", "image": PIL.Image}``. When the
last message is from the assistant, the reply continues it (a prefilled answer).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image
from tqdm.auto import tqdm

__all__ = ["AnswerBackend", "CachedBackend", "LocalVLMBackend", "OpenAIChatBackend", "cut_at_stop"]

Prompt = list[dict[str, Any]]


@runtime_checkable
class AnswerBackend(Protocol):
    """Anything that turns a batch of chat prompts into generated texts (same order)."""

    def answer(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int = 128,
        stop: Sequence[str] | None = None,
    ) -> list[str]: ...


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """Cut ``text`` before the first stop string (excluded, as in the OpenAI API)."""
    if not stop:
        return text
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else text


def _continues(prompt: Prompt) -> bool:
    return bool(prompt) and prompt[-1].get("role") == "assistant"


def _check_prompts(prompts: Sequence[Prompt], max_new_tokens: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, Sequence) or not prompt:
            raise ValueError(f"prompts[{i}] must be a non-empty list of chat messages")


class LocalVLMBackend:
    """Generate with a local transformers model and its processor (or tokenizer), batched.

    Decoding is greedy by default (``do_sample=False``) so measurements repeat exactly;
    with sampling, ``seed`` fixes the draws without touching the global RNG. The model's
    train/eval mode is restored after each call, so it can be the policy being trained.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        batch_size: int = 8,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        show_progress: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.processor = processor
        self.batch_size = batch_size
        self.generation_kwargs: dict[str, Any] = {"do_sample": do_sample}
        if do_sample:
            self.generation_kwargs |= {"temperature": temperature, "top_p": top_p}
        self.seed = seed
        self.show_progress = show_progress
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self._multimodal = hasattr(processor, "image_processor")

    def _prepare(self, prompts: Sequence[Prompt]) -> list[Prompt]:
        if self._multimodal:
            return list(prompts)
        flat = []
        for i, prompt in enumerate(prompts):
            messages = []
            for message in prompt:
                content = message.get("content")
                if isinstance(content, list):
                    if any(p.get("type") == "image" for p in content):
                        raise ValueError(
                            f"prompts[{i}] holds images but the backend's processor is a "
                            "text-only tokenizer: pass a multimodal processor"
                        )
                    content = "".join(p.get("text", "") for p in content)
                messages.append({**message, "content": content})
            flat.append(messages)
        return flat

    def _generate(
        self, batch: list[Prompt], continue_final: bool, max_new_tokens: int
    ) -> list[str]:
        # Processors take `padding` in `processor_kwargs`, tokenizers as an argument.
        padding = {"processor_kwargs": {"padding": True}} if self._multimodal else {"padding": True}
        inputs = self.processor.apply_chat_template(
            batch,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            add_generation_prompt=not continue_final,
            continue_final_message=continue_final,
            **padding,
        )
        inputs = inputs.to(self.model.device)
        output = self.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            **self.generation_kwargs,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def answer(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int = 128,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        import torch  # imported here so that the CLI and endpoint users do not pay for it

        _check_prompts(prompts, max_new_tokens)
        prompts = self._prepare(prompts)
        outputs: list[str] = [""] * len(prompts)
        # Prompts that continue an assistant turn and prompts that open one are rendered
        # differently, so they are batched apart (order restored at the end).
        groups: dict[bool, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(_continues(prompt), []).append(i)
        batches = [
            (flag, idx[s : s + self.batch_size])
            for flag, idx in groups.items()
            for s in range(0, len(idx), self.batch_size)
        ]
        was_training = self.model.training
        padding_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"  # decoder-only generation needs left padding
        self.model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                for flag, idx in tqdm(batches, desc="generating", disable=not self.show_progress):
                    texts = self._generate([prompts[i] for i in idx], flag, max_new_tokens)
                    for i, text in zip(idx, texts):
                        outputs[i] = cut_at_stop(text, stop)
        finally:
            self.model.train(was_training)
            self.tokenizer.padding_side = padding_side
        return outputs


def _image_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _to_openai_message(message: Mapping[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if part.get("type") == "image":
                image = part.get("image")
                if not isinstance(image, Image.Image):
                    raise ValueError("image parts must hold a PIL image under 'image'")
                parts.append({"type": "image_url", "image_url": {"url": _image_url(image)}})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part.get("text", "")})
            else:
                parts.append(dict(part))
        content = parts
    return {"role": message["role"], "content": content}


class OpenAIChatBackend:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, SGLang, TGI, ...)
    over plain HTTP (no ``openai`` package needed). Images are sent as PNG data URIs.

    Args:
        base_url: e.g. ``"http://localhost:8000/v1"`` (``/chat/completions`` is appended).
        model: the model name the server expects.
        api_key: sent as a bearer token; defaults to ``$OPENAI_API_KEY`` when set.
        continue_final_message: for servers that can continue a prefilled assistant turn
            (vLLM, SGLang): adds ``continue_final_message=true, add_generation_prompt=false``
            to requests whose last message is from the assistant.
        extra_body: more JSON fields for every request (``top_k``, ``seed``, ...).
        max_workers: requests in flight at once.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        temperature: float = 0.0,
        timeout: float = 120.0,
        max_workers: int = 4,
        max_retries: int = 2,
        continue_final_message: bool = False,
        extra_body: Mapping[str, Any] | None = None,
        show_progress: bool = False,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model must name the endpoint's model")
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.temperature = temperature
        self.timeout = timeout
        self.max_workers = max_workers
        self.max_retries = max_retries
        self.continue_final_message = continue_final_message
        self.extra_body = dict(extra_body or {})
        self.show_progress = show_progress

    def _payload(self, prompt: Prompt, max_new_tokens: int, stop: Sequence[str] | None) -> dict:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [_to_openai_message(m) for m in prompt],
            "max_tokens": max_new_tokens,
            "temperature": self.temperature,
        }
        if stop:
            payload["stop"] = list(stop)
        if self.continue_final_message and _continues(prompt):
            payload |= {"continue_final_message": True, "add_generation_prompt": False}
        return payload | self.extra_body

    def _post(self, payload: dict) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        for attempt in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    data = json.loads(response.read().decode())
                break
            except urllib.error.HTTPError as err:
                body = err.read().decode(errors="replace")[:300]
                if err.code in (429, 500, 502, 503, 504) and attempt < self.max_retries:
                    time.sleep(2**attempt)
                    continue
                raise RuntimeError(f"{self.url} answered HTTP {err.code}: {body}") from None
            except (urllib.error.URLError, TimeoutError) as err:
                if attempt < self.max_retries:
                    time.sleep(2**attempt)
                    continue
                raise RuntimeError(f"cannot reach {self.url}: {err}") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise RuntimeError(
                f"{self.url} returned no choices[0].message.content: {str(data)[:300]}"
            ) from None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
        return content or ""

    def answer(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int = 128,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        _check_prompts(prompts, max_new_tokens)
        payloads = [self._payload(p, max_new_tokens, stop) for p in prompts]
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            results = pool.map(self._post, payloads)
            texts = list(
                tqdm(results, total=len(payloads), desc="requests", disable=not self.show_progress)
            )
        # Servers that ignore `stop` still get their reply cut the same way.
        return [cut_at_stop(t, stop) for t in texts]


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
    a line torn by a crash is ignored when the file is read back.
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
        keys = [_prompt_key(p, self.namespace, max_new_tokens, stop) for p in prompts]
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self.cache:
                todo.setdefault(key, i)
        pending = list(todo.items())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(pending), self.chunk_size):
            chunk = pending[start : start + self.chunk_size]
            replies = self.backend.answer([prompts[i] for _, i in chunk], max_new_tokens, stop)
            with open(self.path, "a", encoding="utf-8") as handle:
                if self._torn:
                    handle.write("\n")
                    self._torn = False
                for (key, _), reply in zip(chunk, replies):
                    self.cache[key] = reply
                    handle.write(json.dumps({"key": key, "reply": reply}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        return [self.cache[key] for key in keys]

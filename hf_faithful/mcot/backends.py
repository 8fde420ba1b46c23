"""Backends that answer multimodal chat prompts: a local transformers model or an
OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, TGI) behind one small protocol, used for
the model under test, the judge and the reasoning rewriter of ``faithfulness/`` and for
SCCM's sufficiency answerer; :func:`build_backend` is the one factory they all call.

A prompt is a list of chat messages whose ``content`` is a string or a list of parts
``{"type": "text", "text": ...}`` / ``{"type": "image", "image": PIL.Image}``. When the
last message is from the assistant, the reply continues it (a prefilled answer) where
the backend can (:func:`can_continue`).
:class:`~hf_faithful.mcot.backend_cache.CachedBackend` stores any backend's answers.

A request an endpoint does not answer raises :class:`BackendError` (the URL and the
reason in its message); :func:`answer_each` returns such errors per prompt instead, so one
refused request (an image too large, a context too long) costs one record, not the run,
while an unreachable endpoint (:class:`EndpointUnreachableError`) still stops it at once.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

from PIL import Image
from tqdm.auto import tqdm

from hf_faithful.mcot.images import png_data_uri
from hf_faithful.mcot.messages import content_text

__all__ = [
    "AnswerBackend",
    "BackendError",
    "EndpointUnreachableError",
    "LocalVLMBackend",
    "OpenAIChatBackend",
    "answer_each",
    "build_backend",
    "can_continue",
    "cut_at_stop",
    "load_local_backend",
]

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


class BackendError(RuntimeError):
    """A request the backend could not get answered; the message names the URL and why."""


class EndpointUnreachableError(BackendError):
    """The endpoint cannot be reached at all (refused, unknown host, timeout): every
    request would fail the same way, so callers stop instead of going on record by record."""


def answer_each(
    backend: AnswerBackend,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 128,
    stop: Sequence[str] | None = None,
) -> list[str | BackendError]:
    """``backend.answer`` with a :class:`BackendError` in place of each reply whose request
    failed, where the backend can tell them apart (``answer_each`` method: endpoints and
    their caches); other backends answer or raise as a whole. An unreachable endpoint
    raises :class:`EndpointUnreachableError`."""
    each = getattr(backend, "answer_each", None)
    if callable(each):
        return each(prompts, max_new_tokens, stop)
    return list(backend.answer(prompts, max_new_tokens, stop))


def can_continue(backend: Any) -> bool:
    """Whether ``backend`` continues a prompt that ends in an assistant turn (a prefilled
    ``<answer>``) rather than opening a new turn: local models do, an endpoint only when
    built with ``continue_final_message`` (vLLM, SGLang); wrappers (``CachedBackend``) are
    seen through. Unknown backends are assumed to continue."""
    while hasattr(backend, "backend") and hasattr(backend, "namespace"):  # CachedBackend
        backend = backend.backend
    if isinstance(backend, OpenAIChatBackend):
        return backend.continue_final_message
    return True


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

    Decoding is greedy by default (``do_sample=False``) so measurements repeat exactly.
    With sampling, ``seed`` fixes the draws: the n-th call of a backend draws from a state
    derived from ``(seed, n)``, so two backends built alike repeat each other while
    successive calls differ. The global CPU and CUDA random states are forked and restored
    around each call: the backend can answer in the middle of training (SCCM's policy
    answerer) without resetting the RNG the training samples from. The model's train/eval
    mode is restored after each call, so it can be the policy being trained.
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
        self._calls = 0  # answer() calls so far: each one draws from its own seed
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
                    content = content_text(content)
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
        # manual_seed reseeds every CUDA device too: fork them all, or the caller's GPU
        # sampling would restart from this seed after every call.
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        self._calls += 1
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                torch.manual_seed(_call_seed(self.seed, self._calls))
                for flag, idx in tqdm(batches, desc="generating", disable=not self.show_progress):
                    texts = self._generate([prompts[i] for i in idx], flag, max_new_tokens)
                    for i, text in zip(idx, texts):
                        outputs[i] = cut_at_stop(text, stop)
        finally:
            self.model.train(was_training)
            self.tokenizer.padding_side = padding_side
        return outputs


def _call_seed(seed: int, call: int) -> int:
    """The seed of a backend's ``call``-th answer: distinct per call, fixed by ``seed``."""
    import numpy as np

    return int(np.random.SeedSequence([seed, call]).generate_state(1)[0])


def _to_openai_message(message: Mapping[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if part.get("type") == "image":
                image = part.get("image")
                if not isinstance(image, Image.Image):
                    raise ValueError("image parts must hold a PIL image under 'image'")
                parts.append({"type": "image_url", "image_url": {"url": png_data_uri(image)}})
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
        # set once the endpoint proved unreachable: requests still queued fail at once
        self._unreachable = threading.Event()
        self._unreachable_reason = ""

    def served_models(self, timeout: float = 10.0) -> list[str] | None:
        """The model names the server lists (``GET {base_url}/models``, as vLLM, SGLang and
        OpenAI answer), or None when it has no such route or answers something else; raises
        :class:`EndpointUnreachableError` when the server cannot be reached. A check to run
        before a measurement: one request, no retries."""
        url = self.url.removesuffix("/chat/completions") + "/models"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            request = urllib.request.Request(url, headers=headers, method="GET")
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = json.loads(response.read().decode())
        except urllib.error.HTTPError:
            return None  # the server is there; it just does not list its models
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            raise EndpointUnreachableError(
                f"cannot reach {url} ({reason}): is the server running, and is the endpoint "
                "URL right (e.g. http://localhost:8000/v1)?"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return None
        return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]

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
                raise BackendError(f"{self.url} answered HTTP {err.code}: {body}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if self._unreachable.is_set():
                    raise EndpointUnreachableError(self._unreachable_reason) from None
                if attempt < self.max_retries:
                    time.sleep(2**attempt)
                    continue
                reason = getattr(err, "reason", err)
                self._unreachable_reason = (
                    f"cannot reach {self.url} ({reason}) after {self.max_retries + 1} "
                    "attempts: is the server running, and is the endpoint URL right "
                    "(e.g. http://localhost:8000/v1)?"
                )
                self._unreachable.set()
                raise EndpointUnreachableError(self._unreachable_reason) from None
            except json.JSONDecodeError as err:
                raise BackendError(f"{self.url} answered with invalid JSON ({err.msg})") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(
                f"{self.url} returned no choices[0].message.content: {str(data)[:300]}"
            ) from None
        # some servers return content parts
        return content_text(content) if isinstance(content, list) else content or ""

    def answer(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int = 128,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        """The replies, in order; raises the first :class:`BackendError`."""
        replies = self.answer_each(prompts, max_new_tokens, stop)
        for reply in replies:
            if isinstance(reply, BackendError):
                raise reply
        return replies  # type: ignore[return-value]

    def _post_or_error(self, payload: dict) -> str | BackendError:
        if self._unreachable.is_set():
            return EndpointUnreachableError(self._unreachable_reason)
        try:
            return self._post(payload)
        except BackendError as err:
            return err

    def answer_each(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int = 128,
        stop: Sequence[str] | None = None,
    ) -> list[str | BackendError]:
        """The replies, with a :class:`BackendError` in place of each failed request;
        raises :class:`EndpointUnreachableError` when the endpoint cannot be reached."""
        _check_prompts(prompts, max_new_tokens)
        self._unreachable.clear()
        payloads = [self._payload(p, max_new_tokens, stop) for p in prompts]
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            results = pool.map(self._post_or_error, payloads)
            replies = list(
                tqdm(results, total=len(payloads), desc="requests", disable=not self.show_progress)
            )
        for reply in replies:
            if isinstance(reply, EndpointUnreachableError):
                raise reply
        # Servers that ignore `stop` still get their reply cut the same way.
        return [r if isinstance(r, BackendError) else cut_at_stop(r, stop) for r in replies]


def load_local_backend(
    name_or_path: str,
    *,
    batch_size: int = 8,
    device: Any = None,
    trust_remote_code: bool = False,
    show_progress: bool = False,
    require_vision: bool = False,
) -> LocalVLMBackend:
    """A backend over a local (or Hub) vision-language or text-only model, ``"reference"``
    (the bundled reference VLM, :mod:`hf_faithful.models.reference_vlm`) or ``"tiny"``
    (the built-in tiny Qwen3-VL with random weights, for offline demos).

    Qwen-VL folders whose processor cannot be built without a video processor
    (torchvision) get the image-only processor of :mod:`hf_faithful.models.vlm_processing`.
    ``require_vision``: a text-only model raises ValueError (read from its config, before
    any weight loads).
    """
    if name_or_path == "reference":
        from hf_faithful.assets import REFERENCE_VLM_DIR

        name_or_path = str(REFERENCE_VLM_DIR)
    if name_or_path == "tiny":
        from hf_faithful.testing.tiny_vlm import build_tiny_vlm

        model, processor = build_tiny_vlm("qwen3_vl", seed=0)
    else:
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoTokenizer,
        )
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        from hf_faithful.models.vlm_processing import load_vlm_processor

        remote = {"trust_remote_code": trust_remote_code}
        config = AutoConfig.from_pretrained(name_or_path, **remote)
        vision = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        if require_vision and not vision:
            raise ValueError(
                f"{name_or_path} is not a vision-language model (model_type "
                f"{config.model_type!r} takes no images)"
            )
        if vision:
            model = AutoModelForImageTextToText.from_pretrained(
                name_or_path, dtype="auto", **remote
            )
            processor = load_vlm_processor(name_or_path, config.model_type, **remote)
        else:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype="auto", **remote)
            processor = AutoTokenizer.from_pretrained(name_or_path, **remote)
        if device is not None:
            model = model.to(device)
    return LocalVLMBackend(
        model.eval(), processor, batch_size=batch_size, show_progress=show_progress
    )


def build_backend(
    model: str,
    endpoint: str | None = None,
    *,
    api_key: str | None = None,
    continue_final_message: bool = False,
    batch_size: int = 8,
    device: Any = None,
    trust_remote_code: bool = False,
    show_progress: bool = False,
    require_vision: bool = False,
) -> AnswerBackend:
    """The backend for ``model``: the served model name behind ``endpoint`` (an
    OpenAI-compatible base URL) when given, else a local model (see
    :func:`load_local_backend`, ``require_vision`` included). Used by the ``faithfulness``
    CLI, SCCM's answerer and the inspector Space, so a model name means the same thing
    everywhere."""
    if endpoint is not None:
        if not model or model in ("tiny", "reference"):  # built-in names, not served ones
            raise ValueError(f"with an endpoint ({endpoint}) name the served model, not {model!r}")
        return OpenAIChatBackend(
            endpoint,
            model,
            api_key=api_key,
            continue_final_message=continue_final_message,
            show_progress=show_progress,
        )
    if not model:
        raise ValueError("model must name a local model folder, a Hub id or 'tiny'")
    return load_local_backend(
        model,
        batch_size=batch_size,
        device=device,
        trust_remote_code=trust_remote_code,
        show_progress=show_progress,
        require_vision=require_vision,
    )

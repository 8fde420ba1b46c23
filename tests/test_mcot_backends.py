"""Answer backends: a real HTTP server speaking the OpenAI chat API, and the tiny local VLM.

``ChatServer`` (also used by the other faithfulness tests) serves
``POST /v1/chat/completions`` on 127.0.0.1 with replies computed by a Python function of
the request, so tests can script a model that reads the crops or the reasoning.
"""

import base64
import copy
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from hf_faithful.faithfulness.backends import (
    AnswerBackend,
    LocalVLMBackend,
    OpenAIChatBackend,
    cut_at_stop,
)
from hf_faithful.mcot.trace import load_traces

SAMPLE = "hf_faithful/assets/faithfulness/sample_traces.jsonl"


class ChatServer:
    """OpenAI-compatible chat completions server whose reply is ``respond(request_json)``.

    ``fail_with`` holds HTTP status codes returned (in order) before answering normally.
    """

    def __init__(self, respond, fail_with=()):
        self.respond = respond
        self.fail_with = list(fail_with)
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()

    def __enter__(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.requests.append(body)
                    outer.headers.append(dict(self.headers))
                    failure = outer.fail_with.pop(0) if outer.fail_with else None
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if failure:
                    return self._send(failure, {"error": {"message": "try again"}})
                if "model" not in body or "messages" not in body:
                    return self._send(400, {"error": {"message": "model and messages required"}})
                text = cut_at_stop(outer.respond(body), body.get("stop"))
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def request_images(body) -> list[Image.Image]:
    """The images of a chat request, in order, decoded from their data URIs."""
    images = []
    for message in body["messages"]:
        content = message["content"]
        for part in content if isinstance(content, list) else []:
            if part["type"] == "image_url":
                data = part["image_url"]["url"].split(",", 1)[1]
                images.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
    return images


def request_text(body, roles=("user", "assistant", "system")) -> str:
    texts = []
    for message in body["messages"]:
        if message["role"] not in roles:
            continue
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts += [p["text"] for p in content if p["type"] == "text"]
    return "\n".join(texts)


def test_endpoint_payload_images_stop_and_auth():
    def respond(body):
        return f"{len(request_images(body))} images</answer> trailing"

    image = Image.new("RGB", (40, 30), (255, 0, 0))
    prompt = [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": "q"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "<answer>"}]},
    ]
    with ChatServer(respond) as server:
        backend = OpenAIChatBackend(
            server.base_url,
            "m1",
            api_key="sk-test",
            continue_final_message=True,
            extra_body={"seed": 3},
        )
        assert isinstance(backend, AnswerBackend)
        replies = backend.answer([prompt, prompt[:2]], max_new_tokens=7, stop=["</answer>"])
    assert replies == ["1 images", "1 images"]
    first, second = sorted(server.requests, key=lambda r: -len(r["messages"]))  # sent in parallel
    assert first["model"] == "m1" and first["max_tokens"] == 7 and first["stop"] == ["</answer>"]
    assert first["temperature"] == 0.0 and first["seed"] == 3
    assert first["continue_final_message"] is True and first["add_generation_prompt"] is False
    assert "continue_final_message" not in second  # the prompt does not end with the assistant
    url = first["messages"][1]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (40, 30) and decoded.getpixel((0, 0))[:3] == (255, 0, 0)
    assert server.headers[0]["Authorization"] == "Bearer sk-test"


def test_endpoint_retries_transient_errors_and_reports_others():
    with ChatServer(lambda body: "ok", fail_with=[503, 429]) as server:
        backend = OpenAIChatBackend(server.base_url, "m", max_retries=2, max_workers=1)
        assert backend.answer([[{"role": "user", "content": "hi"}]]) == ["ok"]
        assert len(server.requests) == 3
    with ChatServer(lambda body: "ok", fail_with=[400]) as server:
        backend = OpenAIChatBackend(server.base_url, "m")
        with pytest.raises(RuntimeError, match="HTTP 400"):
            backend.answer([[{"role": "user", "content": "hi"}]])
    with ChatServer(lambda body: "ok") as server:
        wrong = OpenAIChatBackend(server.base_url.removesuffix("/v1"), "m")
        with pytest.raises(RuntimeError, match="HTTP 404"):
            wrong.answer([[{"role": "user", "content": "hi"}]])


def test_endpoint_argument_errors():
    with pytest.raises(ValueError, match="base_url"):
        OpenAIChatBackend("localhost:8000", "m")
    backend = OpenAIChatBackend("http://127.0.0.1:9", "m", max_retries=0, timeout=2)
    with pytest.raises(ValueError, match="prompts\\[0\\]"):
        backend.answer([[]])
    with pytest.raises(RuntimeError, match="cannot reach"):
        backend.answer([[{"role": "user", "content": "hi"}]])


@pytest.fixture(scope="module")
def tiny_vlm():
    from hf_faithful.testing.tiny_vlm import build_tiny_vlm

    model, processor = build_tiny_vlm("qwen3_vl", seed=0)
    # Random weights at the default scale make the tiny model repeat one token whatever the
    # input; larger weights make its outputs depend on the prompt, so batching is testable.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() > 1:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.5)
    return model, processor


def test_local_vlm_batched_equals_one_by_one(tiny_vlm):
    model, processor = tiny_vlm
    traces = [t for t in load_traces(SAMPLE) if t.valid][:4]
    prompts = [t.to_messages(include_answer=False, prefill_answer=True) for t in traces]
    prompts.append(traces[0].to_messages(include_answer=False))  # opens a new assistant turn
    model.train()
    one = LocalVLMBackend(model, processor, batch_size=1).answer(prompts, max_new_tokens=6)
    assert model.training  # mode restored
    model.eval()
    batched = LocalVLMBackend(model, processor, batch_size=5).answer(prompts, max_new_tokens=6)
    assert one == batched
    assert len(set(one)) > 1  # outputs depend on the prompt
    assert processor.tokenizer.padding_side == "left"


def test_local_vlm_stop_strings_and_text_only_tokenizer(tiny_vlm):
    model, processor = tiny_vlm
    prompt = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    (full,) = LocalVLMBackend(model, processor).answer([prompt], max_new_tokens=6)
    stop = full[2:4]
    (cut,) = LocalVLMBackend(model, processor).answer([prompt], max_new_tokens=6, stop=[stop])
    assert cut == full[: full.find(stop)]
    tokenizer = copy.deepcopy(processor.tokenizer)
    tokenizer.chat_template = processor.chat_template
    text_only = LocalVLMBackend(model, tokenizer)
    # a text-only tokenizer (e.g. a rewriter LM) renders text prompts like the processor
    assert text_only.answer([prompt, [{"role": "user", "content": "hello"}]], max_new_tokens=6) == [
        full,
        full,
    ]
    image_prompt = [
        {"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (32, 32))}]}
    ]
    with pytest.raises(ValueError, match="text-only tokenizer"):
        text_only.answer([image_prompt])


def test_sampling_is_seeded(tiny_vlm):
    model, processor = tiny_vlm
    prompt = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    state = torch.random.get_rng_state()
    a = LocalVLMBackend(model, processor, do_sample=True, seed=5).answer(
        [prompt] * 2, max_new_tokens=8
    )
    b = LocalVLMBackend(model, processor, do_sample=True, seed=5).answer(
        [prompt] * 2, max_new_tokens=8
    )
    assert a == b
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert np.all([isinstance(x, str) for x in a])


def test_cached_backend_resumes_and_never_asks_twice(tmp_path):
    from hf_faithful.faithfulness.backends import CachedBackend

    image = Image.new("RGB", (8, 8), (1, 2, 3))
    prompts = [
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": str(i)}],
            }
        ]
        for i in range(5)
    ]
    path = tmp_path / "cache.jsonl"
    calls = []

    class Flaky:
        """Fails at its ``fail_at``-th call, as an interrupted run would."""

        def __init__(self, fail_at=None):
            self.fail_at = fail_at

        def answer(self, batch, max_new_tokens=128, stop=None):
            calls.append(len(batch))
            if len(calls) == self.fail_at:
                raise RuntimeError("connection lost")
            return [p[0]["content"][1]["text"] + "!" for p in batch]

    with pytest.raises(RuntimeError, match="connection lost"):
        CachedBackend(Flaky(fail_at=3), path, namespace="m", chunk_size=2).answer(
            prompts + prompts[:1]
        )
    assert calls == [2, 2, 1]  # the duplicate prompt is asked once
    with open(path, "a") as handle:
        handle.write('{"key": "torn')  # a crash in the middle of a line
    calls.clear()
    cached = CachedBackend(Flaky(), path, namespace="m", chunk_size=2)
    assert cached.answer(prompts) == ["0!", "1!", "2!", "3!", "4!"]
    assert calls == [1]  # only the prompt lost in the interruption
    calls.clear()
    assert CachedBackend(Flaky(), path, namespace="m").answer(prompts[::-1]) == [
        "4!",
        "3!",
        "2!",
        "1!",
        "0!",
    ]
    assert calls == []
    other_image = [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": Image.new("RGB", (8, 8))},
                    {"type": "text", "text": "0"},
                ],
            }
        ]
    ]
    CachedBackend(Flaky(), path, namespace="m").answer(other_image)
    CachedBackend(Flaky(), path, namespace="other").answer(prompts[:1])
    CachedBackend(Flaky(), path, namespace="m").answer(prompts[:1], max_new_tokens=7)
    assert calls == [1, 1, 1]  # a different image, model or length is a different question

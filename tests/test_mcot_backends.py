"""Answer backends: an OpenAI-compatible endpoint (a real local HTTP server), the tiny
local VLM, and the backend factory."""

import base64
import contextlib
import copy
import io

import numpy as np
import pytest
import torch
from chat_server import ChatServer, request_images
from PIL import Image

from hf_faithful.mcot.backends import (
    AnswerBackend,
    BackendError,
    EndpointUnreachableError,
    LocalVLMBackend,
    OpenAIChatBackend,
    answer_each,
    build_backend,
    can_continue,
)
from hf_faithful.mcot.records import load_traces

SAMPLE = "hf_faithful/assets/faithfulness/sample_traces.jsonl"


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


def test_one_refused_request_costs_one_reply_and_an_unreachable_endpoint_stops():
    def respond(body):
        return "ok " + body["messages"][0]["content"]

    prompts = [[{"role": "user", "content": text}] for text in ("a", "b", "c")]
    with ChatServer(respond, fail_with=[400]) as server:
        backend = OpenAIChatBackend(server.base_url, "m", max_workers=1)
        replies = answer_each(backend, prompts)
    assert isinstance(replies[0], BackendError) and "HTTP 400" in str(replies[0])
    assert replies[1:] == ["ok b", "ok c"]
    # a closed port: one clear error (what to check), raised at once for the whole batch
    closed = OpenAIChatBackend("http://127.0.0.1:9/v1", "m", max_retries=0, timeout=2)
    with pytest.raises(EndpointUnreachableError, match="is the server running"):
        answer_each(closed, prompts)
    assert issubclass(EndpointUnreachableError, RuntimeError)  # callers catching it still do


def test_which_backends_continue_a_prefilled_turn():
    from hf_faithful.mcot.backend_cache import CachedBackend

    assert not can_continue(OpenAIChatBackend("http://x/v1", "m"))
    served = OpenAIChatBackend("http://x/v1", "m", continue_final_message=True)
    assert can_continue(served) and can_continue(CachedBackend(served, "/tmp/unused.jsonl"))
    assert not can_continue(CachedBackend(OpenAIChatBackend("http://x/v1", "m"), "/tmp/u.jsonl"))
    assert can_continue(object())  # local models and scripted backends continue


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


def test_successive_sampling_calls_draw_new_samples(tiny_vlm):
    # SCCM's policy answerer lives across steps: reseeding every call to the same value
    # would repeat the same draws (and, on GPU, reset the training RNG) every step.
    model, processor = tiny_vlm
    prompts = [[{"role": "user", "content": [{"type": "text", "text": "hello"}]}]] * 4
    state = torch.random.get_rng_state()
    backend = LocalVLMBackend(model, processor, do_sample=True, temperature=2.0, seed=5)
    calls = [backend.answer(prompts, max_new_tokens=8) for _ in range(3)]
    assert calls[0] != calls[1] and calls[1] != calls[2] and calls[0] != calls[2]
    assert torch.equal(state, torch.random.get_rng_state())
    # Still seeded: a backend built alike draws the same sequence.
    again = LocalVLMBackend(model, processor, do_sample=True, temperature=2.0, seed=5)
    assert [again.answer(prompts, max_new_tokens=8) for _ in range(3)] == calls


def test_cuda_random_state_is_forked_too(tiny_vlm, monkeypatch):
    """Where CUDA is available, every device's RNG is forked (manual_seed reseeds them all)."""
    model, processor = tiny_vlm
    forked = []
    fork_rng = torch.random.fork_rng

    @contextlib.contextmanager
    def recording_fork_rng(devices=None, **kwargs):
        forked.append(devices)
        with fork_rng(devices=[]):  # this machine may have no CUDA to fork
            yield

    monkeypatch.setattr(torch.random, "fork_rng", recording_fork_rng)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    prompt = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    LocalVLMBackend(model, processor).answer([prompt], max_new_tokens=2)
    assert forked == [[0, 1]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_random_state_is_restored(tiny_vlm):
    model, processor = tiny_vlm
    prompt = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    model.cuda()
    try:
        torch.cuda.manual_seed_all(123)
        states = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
        LocalVLMBackend(model, processor, do_sample=True).answer([prompt], max_new_tokens=4)
        after = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
        assert all(torch.equal(a, b) for a, b in zip(states, after))
    finally:
        model.cpu()


def test_build_backend_endpoint_and_tiny():
    backend = build_backend("served", "http://127.0.0.1:9/v1", continue_final_message=True)
    assert isinstance(backend, OpenAIChatBackend) and backend.model == "served"
    assert backend.continue_final_message
    with pytest.raises(ValueError, match="name the served model"):
        build_backend("tiny", "http://127.0.0.1:9/v1")
    tiny = build_backend("tiny", batch_size=3)
    assert isinstance(tiny, LocalVLMBackend) and tiny.batch_size == 3
    assert hasattr(tiny.processor, "image_processor")


def test_reference_names_the_bundled_vlm_everywhere():
    from hf_faithful.mcot.backends import build_backend

    backend = build_backend("reference", batch_size=2)
    assert backend.model.config.model_type == "qwen3_vl"
    with pytest.raises(ValueError, match="name the served model"):
        build_backend("reference", "http://localhost:1/v1")


def test_served_models_checks_an_endpoint_before_a_run():
    with ChatServer(lambda body: "", models=["served", "other"]) as server:
        assert OpenAIChatBackend(server.base_url, "served").served_models() == ["served", "other"]
    with ChatServer(lambda body: "") as server:  # no /models route: the server cannot tell
        assert OpenAIChatBackend(server.base_url, "served").served_models() is None
    closed = OpenAIChatBackend("http://127.0.0.1:9/v1", "m")
    with pytest.raises(EndpointUnreachableError, match="cannot reach .*/v1/models"):
        closed.served_models(timeout=2)


def test_require_vision_refuses_a_text_only_model_before_its_weights_load(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(
        tmp_path
    )  # a config only: the check reads nothing else
    with pytest.raises(ValueError, match="not a vision-language model .*'llama'"):
        build_backend(str(tmp_path), require_vision=True)

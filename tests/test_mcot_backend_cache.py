"""CachedBackend: answers stored as they arrive, resumed after a crash, never asked twice."""

import pytest
from PIL import Image

from hf_faithful.mcot.backend_cache import CachedBackend


def test_cached_backend_resumes_and_never_asks_twice(tmp_path):
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


def test_failed_requests_are_not_cached(tmp_path):
    from hf_faithful.mcot.backends import BackendError

    class Refusing:
        """Refuses prompt "b" once, as an endpoint answering HTTP 400 would."""

        def __init__(self):
            self.asked = []

        def answer_each(self, batch, max_new_tokens=128, stop=None):
            out = []
            for prompt in batch:
                text = prompt[0]["content"]
                self.asked.append(text)
                refuse = text == "b" and self.asked.count("b") == 1
                out.append(BackendError("HTTP 400") if refuse else text + "!")
            return out

        def answer(self, batch, max_new_tokens=128, stop=None):
            raise AssertionError("answer_each is used")

    prompts = [[{"role": "user", "content": t}] for t in ("a", "b")]
    backend = Refusing()
    cached = CachedBackend(backend, tmp_path / "c.jsonl", namespace="m")
    first = cached.answer_each(prompts)
    assert first[0] == "a!" and isinstance(first[1], BackendError)
    assert cached.answer_each(prompts) == ["a!", "b!"]  # only the failed one is asked again
    assert backend.asked == ["a", "b", "b"]

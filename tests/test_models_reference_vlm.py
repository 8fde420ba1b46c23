"""The bundled reference VLM: it loads through the public function and its tool use is real."""

from __future__ import annotations

import pytest

from hf_faithful.data.zoom_vqa import sample_stream
from hf_faithful.mcot.answers import answers_match
from hf_faithful.mcot.messages import answer_from_reply
from hf_faithful.mcot.zoom import BoxRules
from hf_faithful.models.reference_vlm import (
    DIRECT_SYSTEM_PROMPT,
    REFERENCE_VLM_BOX_COORDS,
    REFERENCE_VLM_DIR,
    load_reference_vlm,
)


@pytest.fixture(scope="module")
def reference():
    return load_reference_vlm()


def test_ships_as_small_package_data():
    files = {p.name for p in REFERENCE_VLM_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "training_meta.json"} <= files
    size = sum(p.stat().st_size for p in REFERENCE_VLM_DIR.iterdir())
    assert size < 30 * 2**20


def test_loads_as_a_real_qwen3_vl(reference):
    from transformers import Qwen3VLForConditionalGeneration

    model, processor = reference
    assert isinstance(model, Qwen3VLForConditionalGeneration) and not model.training
    assert processor.tokenizer.padding_side == "left"
    assert "<tool_call>" in processor.tokenizer.get_vocab()


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_reference_vlm(tmp_path)


def test_zooming_beats_the_whole_view_on_zoom_needed_questions(reference):
    """A real property of the shipped artifact, measured on 24 fixed test questions."""
    from hf_faithful.faithfulness.config import FaithfulnessConfig
    from hf_faithful.faithfulness.evaluator import FaithfulnessEvaluator
    from hf_faithful.mcot.backends import LocalVLMBackend

    model, processor = reference
    samples = [s for s in _take(sample_stream("test", 0), 80) if s.question_type == "zoom_needed"]
    samples = samples[:24]
    backend = LocalVLMBackend(model, processor, batch_size=24)
    config = FaithfulnessConfig(
        box_rules=BoxRules(coords=REFERENCE_VLM_BOX_COORDS), max_turn_tokens=96, max_tool_calls=2
    )
    traces = FaithfulnessEvaluator(backend, config=config).generate_traces(
        [{"image": s.image, "question": s.question, "reference": s.answer} for s in samples]
    )
    with_tools = sum(t.valid and answers_match(t.answer, s.answer) for t, s in zip(traces, samples))
    assert sum(bool(t.crops) for t in traces) >= 20  # it calls the tool by itself
    direct = backend.answer(
        [
            [
                {"role": "system", "content": [{"type": "text", "text": DIRECT_SYSTEM_PROMPT}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": s.image},
                        {"type": "text", "text": s.question},
                    ],
                },
            ]
            for s in samples
        ],
        16,
        stop=["</answer>"],
    )
    without = sum(
        answers_match(answer_from_reply(d + "</answer>"), s.answer) for d, s in zip(direct, samples)
    )
    assert with_tools >= without + 6, (with_tools, without)


def _take(stream, n):
    return [s for _, s in zip(range(n), stream)]

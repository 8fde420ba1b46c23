"""A few-step smoke run of the reference VLM's training script, end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_reference_vlm.py"


def _script():
    spec = importlib.util.spec_from_file_location("train_reference_vlm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conversations_train_only_the_models_turns():
    import random

    from hf_faithful.data.zoom_vqa import sample_stream

    script = _script()
    processor = script.build_reference_vlm_processor(script.byte_level_qwen_tokenizer())
    rng, prompts, suff = random.Random(0), script._system_prompts(), script._sufficiency_prompts()
    seen = set()
    for sample in [s for _, s in zip(range(40), sample_stream("train", 0))]:
        messages, tools, loss_turns = script.conversation(sample, rng, prompts, suff)
        text = script.render(processor, messages, tools)
        ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        mask = script.assistant_mask(ids, processor.tokenizer, loss_turns)
        trained = processor.tokenizer.decode([i for i, m in zip(ids, mask) if m])
        if script.DESCRIBE in text:  # a description: every square's colour and cell
            assert trained == script.describe(sample) + "<|im_end|>"
            assert (
                sample.question_type != "zoom_needed"
                or f"row {sample.target_cell[0] + 1}" in trained
            )
            continue
        assert trained.endswith(f"<answer>{sample.answer}</answer><|im_end|>")
        assert sample.question not in trained and "<|im_start|>" not in trained
        seen.add(len(loss_turns))
        if len(loss_turns) == 2 and all(loss_turns):  # a zoom rollout in the model's own words
            assert '<tool_call>\n{"name": "image_zoom_in_tool"' in trained
    assert seen == {1, 2}


def test_few_step_run_saves_a_loadable_model_with_card(tmp_path):
    from hf_faithful.models.reference_vlm import load_reference_vlm

    out = tmp_path / "vlm"
    args = ["--output", str(out), "--steps", "2", "--perception-steps", "1", "--batch-size", "4"]
    args += ["--size", "smoke"]
    assert _script().main([*args, "--tokenizer-corpus", "40", "--eval-samples", "4"]) == 0
    meta = json.loads((out / "training_meta.json").read_text())
    assert meta["steps"] == 2 and meta["perception_steps"] == 1 and meta["seed"] == 0
    assert set(meta["test_figures"]) <= {"zoom_needed", "global"} and meta["test_figures"]
    assert "accuracy_with_tools" in next(iter(meta["test_figures"].values()))
    assert "Reproduce" in (out / "README.md").read_text()
    model, processor = load_reference_vlm(out)
    assert model.config.model_type == "qwen3_vl"

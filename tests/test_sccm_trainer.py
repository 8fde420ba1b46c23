"""Real GRPO training steps with SCCMRewardTrainer on the tiny offline VLM.

The random tiny model never calls a tool by itself, so its generation is scripted
(``script_generation``): the rollouts really go through TRL's multi-turn tool loop, the
zoom-in environment, the crops fed back as images, the sufficiency queries answered by
the policy's own ``generate``, and a real optimizer step.

Script (128x128 red image, reference "red", 4 generations per prompt):
  rollout 0: zoom into the top-left quarter -> 64x64 crop (4 vision tokens)
  rollout 1: zoom into the whole image      -> 128x128 crop (16 vision tokens)
  rollout 2: a 10 px box, refused by the tool (min side 30)
  rollout 3: broken tool-call JSON, never reaches the tool
then every rollout answers <answer>red</answer>. Sufficiency queries are answered "red"
when they carry at most 4 vision tokens, else "blue". Hence, hand-computed:
  r_s = [1, 0, 0, 0] -> mean 0.25;  r_m = [1 - 1/4, 0 (gated), 0, 0] -> mean 0.1875.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard
from PIL import Image
from transformers.utils import get_json_schema

from hf_faithful.mcot.backends import LocalVLMBackend
from hf_faithful.mcot.zoom import BoxRules
from hf_faithful.sccm.config import SCCMConfig
from hf_faithful.sccm.data import DEEPEYES_SYSTEM_PROMPT, load_deepeyes
from hf_faithful.sccm.environment import ZoomInEnvironment
from hf_faithful.sccm.rewards import answer_accuracy, answer_format
from hf_faithful.sccm.trainer import SCCMRewardTrainer
from hf_faithful.testing.tiny_vlm import (
    CHAT_TEMPLATES,
    build_tiny_vlm,
    load_tiny_vlm,
    save_tiny_vlm,
    script_generation,
)

CALL = (
    '<tool_call>\n{{"name": "image_zoom_in_tool", "arguments": {{"bbox_2d": {box}}}}}\n</tool_call>'
)
BROKEN = (
    '<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0, 0, 64}}\n</tool_call>'
)


def make_script(scale: float = 1.0, record: list | None = None, model=None):
    """First turn per rollout index, then an answer; sufficiency replies by crop size."""

    def box(*xs):
        return json.dumps([round(x * scale) for x in xs])

    first = [
        "<think>the color is in the corner</think>" + CALL.format(box=box(0, 0, 64, 64)),
        CALL.format(box=box(0, 0, 128, 128)),
        CALL.format(box=box(10, 10, 20, 20)),
        BROKEN,
    ]

    def script(prompt: str, row: int) -> str:
        if "<tools>" not in prompt:  # a sufficiency query: crops + question, no tools
            if record is not None:
                record.append((model.training, prompt.count("<|vision_start|>")))
            return (
                "<answer>red</answer>"
                if prompt.count("<|image_pad|>") <= 4
                else "<answer>blue</answer>"
            )
        if prompt.count("<tool_response>") == 0:
            return first[row % 4]
        return "<answer>red</answer>"

    return script


def dataset(n: int = 1, answer: str | None = "red") -> Dataset:
    image = Image.new("RGB", (128, 128), (230, 20, 20))
    return load_deepeyes(
        Dataset.from_dict(
            {
                "image": [image] * n,
                "question": ["What color is the image?"] * n,
                "answer": [answer] * n,
            }
        )
    )


def config(tmp_path, **kwargs) -> SCCMConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_steps=1,
        max_completion_length=256,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        beta=0.0,
        seed=0,
    )
    return SCCMConfig(**(defaults | kwargs))


def answered_format(completions, **kwargs):
    """A user reward kept next to the SCCM ones."""
    return [1.0 if "<answer>" in json.dumps(c, default=str) else 0.0 for c in completions]


def logs(trainer) -> dict:
    return trainer.state.log_history[0]


@pytest.fixture(scope="module")
def qwen3_path(tmp_path_factory):
    return save_tiny_vlm(tmp_path_factory.mktemp("tiny") / "qwen3_vl", family="qwen3_vl")


def test_sccm_step_qwen3_hand_computed(tmp_path, qwen3_path):
    model, processor = load_tiny_vlm(qwen3_path)
    record: list = []
    # Qwen3-VL: box_coords="auto" reads boxes in 0..1000.
    script_generation(model, processor.tokenizer, make_script(1000 / 128, record, model))
    args = config(tmp_path, sufficiency_weight=2.0, minimality_weight=0.5, sufficiency_batch_size=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = SCCMRewardTrainer(
        model,
        reward_funcs=answered_format,
        args=args,
        train_dataset=dataset(),
        processing_class=processor,
    )
    assert trainer.reward_func_names == ["answered_format", "sccm_sufficiency", "sccm_minimality"]
    assert trainer.reward_weights.tolist() == [1.0, 2.0, 0.5]
    assert args.reward_weights is None  # the caller's config is left alone
    assert trainer.environments is None or all(
        e.rules.coords == "normalized_1000" for e in trainer.environments
    )
    trainer.train()

    log = logs(trainer)
    assert log["rewards/sccm_sufficiency/mean"] == pytest.approx(0.25)
    assert log["rewards/sccm_minimality/mean"] == pytest.approx(0.1875)
    assert log["rewards/answered_format/mean"] == pytest.approx(
        0.75
    )  # broken JSON ends without answer
    assert log["reward"] == pytest.approx(0.75 + 2.0 * 0.25 + 0.5 * 0.1875)
    assert log["tools/call_frequency"] == pytest.approx(3 / 4)  # the broken call never parsed
    assert log["tools/failure_frequency"] == pytest.approx(1 / 3)  # the refused box
    assert log["sccm/failed_tool_calls_per_rollout"] == pytest.approx(2 / 4)  # refused + broken
    assert log["sccm/crops_per_rollout"] == pytest.approx(2 / 4)
    assert log["sccm/crop_area_fraction"] == pytest.approx((0.25 + 1.0) / 2)
    envs = trainer.environments
    assert [len(e.crops) for e in envs] == [1, 1, 0, 0]
    assert [e.sufficient for e in envs] == [True, False, None, None]
    assert envs[2].errors and "too small" in envs[2].errors[0]
    # Two sufficiency queries (batch size 1), each with exactly one crop, answered by the
    # policy in eval mode; training mode is back afterwards.
    assert record == [(False, 1), (False, 1)]
    assert model.training
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "the optimizer step did not change the policy"


def test_qwen2_5_stock_template_beta_and_path_model(tmp_path):
    # The stock Qwen2.5-VL template cannot render tool calls: the trainer swaps in TRL's
    # Qwen3-VL one. The model is given as a path, so the beta != 0 reference reloads from it.
    path = save_tiny_vlm(
        tmp_path / "qwen25", family="qwen2_5_vl", chat_template=CHAT_TEMPLATES["qwen2_5_vl"]
    )
    _, processor = load_tiny_vlm(path)
    assert processor.chat_template == CHAT_TEMPLATES["qwen2_5_vl"]
    trainer = SCCMRewardTrainer(
        path, args=config(tmp_path, beta=0.1), train_dataset=dataset(), processing_class=processor
    )
    assert processor.chat_template == CHAT_TEMPLATES["qwen3_vl"]
    assert trainer.ref_model is not None
    assert trainer.reward_func_names == ["sccm_sufficiency", "sccm_minimality"]
    script_generation(trainer.model, processor.tokenizer, make_script())  # absolute pixels
    trainer.train()
    log = logs(trainer)
    assert log["rewards/sccm_sufficiency/mean"] == pytest.approx(0.25)
    assert log["rewards/sccm_minimality/mean"] == pytest.approx(0.1875)
    assert "kl" in log


def test_lora_training(tmp_path, qwen3_path):
    from peft import LoraConfig

    model, processor = load_tiny_vlm(qwen3_path)
    script_generation(model, processor.tokenizer, make_script(1000 / 128))
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = SCCMRewardTrainer(
        model,
        args=config(tmp_path, learning_rate=5e-2),
        train_dataset=dataset(),
        processing_class=processor,
        peft_config=LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        ),
    )
    lora_before = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n
    }
    trainer.train()
    log = logs(trainer)
    assert log["rewards/sccm_sufficiency/mean"] == pytest.approx(0.25)
    assert log["rewards/sccm_minimality/mean"] == pytest.approx(0.1875)
    peft_model = trainer.model
    lora = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert any(not torch.equal(p, lora_before[n]) for n, p in lora.items()), (
        "adapters did not train"
    )
    frozen = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in peft_model.named_parameters()
        if "lora_" not in n
    }
    assert set(frozen) == set(base)
    assert all(torch.equal(frozen[n], base[n]) for n in base), "base weights moved under LoRA"


class _Endpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions that always answers red, recording requests."""

    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        reply = json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": "<answer>Red</answer>"}}]}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args):
        pass


def test_openai_answerer_and_own_answer_without_reference(tmp_path, qwen3_path):
    server = HTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        model, processor = load_tiny_vlm(qwen3_path)
        script_generation(model, processor.tokenizer, make_script(1000 / 128))
        args = config(
            tmp_path,
            answerer="openai",
            answerer_model="judge-vl",
            answerer_base_url=f"http://127.0.0.1:{server.server_port}/v1",
        )
        trainer = SCCMRewardTrainer(
            model, args=args, train_dataset=dataset(answer=None), processing_class=processor
        )
        trainer.train()
    finally:
        server.shutdown()
    # No reference: each crop's reply ("Red") is compared with the rollout's own answer ("red").
    log = logs(trainer)
    assert log["rewards/sccm_sufficiency/mean"] == pytest.approx(2 / 4)
    assert log["rewards/sccm_minimality/mean"] == pytest.approx(
        (0.75 + 0.0) / 4
    )  # full crop: 1 - 1
    assert len(_Endpoint.requests) == 2
    content = _Endpoint.requests[0]["messages"][0]["content"]
    assert [p["type"] for p in content] == ["image_url", "text"]
    assert _Endpoint.requests[0]["model"] == "judge-vl"


def test_answerer_object_and_no_crop_none(tmp_path, qwen3_path):
    # Another local VLM answers (its reply is scripted to "blue": never sufficient), and
    # rollouts without crops are left out (None) instead of scoring 0.
    model, processor = load_tiny_vlm(qwen3_path)
    script_generation(model, processor.tokenizer, make_script(1000 / 128))
    judge, judge_processor = build_tiny_vlm(seed=7)
    script_generation(judge, judge_processor.tokenizer, lambda prompt, row: "<answer>blue</answer>")
    trainer = SCCMRewardTrainer(
        model,
        args=config(tmp_path, no_crop_reward=None),
        train_dataset=dataset(),
        processing_class=processor,
        answerer=LocalVLMBackend(judge, judge_processor),
    )
    trainer.train()
    log = logs(trainer)
    assert log["rewards/sccm_sufficiency/mean"] == pytest.approx(
        0.0
    )  # mean over the 2 cropped rollouts
    assert log["rewards/sccm_minimality/mean"] == pytest.approx(0.0)


def test_bad_arguments(tmp_path, qwen3_path):
    from trl import GRPOConfig

    model, processor = load_tiny_vlm(qwen3_path)
    with pytest.raises(TypeError, match="SCCMConfig"):
        SCCMRewardTrainer(
            model, args=GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])
        )
    with pytest.raises(ValueError, match="reward_weights"):
        SCCMRewardTrainer(
            model,
            reward_funcs=[answered_format],
            args=config(tmp_path, reward_weights=[1.0, 1.0, 1.0]),
            train_dataset=dataset(),
            processing_class=processor,
        )
    with pytest.raises(TypeError, match="processor"):
        SCCMRewardTrainer(
            model,
            args=config(tmp_path),
            train_dataset=dataset(),
            processing_class=processor.tokenizer,
        )

    class OtherEnv:
        def reset(self, **row):
            return None

    with pytest.raises(TypeError, match="ZoomInEnvironment"):
        SCCMRewardTrainer(
            model,
            args=config(tmp_path),
            train_dataset=dataset(),
            processing_class=processor,
            environment_factory=OtherEnv,
        )
    processor.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    model.config.model_type = "llava"  # an unknown family gets no fallback template
    with pytest.raises(ValueError, match="cannot render tool calls"):
        SCCMRewardTrainer(
            model, args=config(tmp_path), train_dataset=dataset(), processing_class=processor
        )


def test_malformed_tool_calls_never_crash(tmp_path, qwen3_path):
    # Unknown tool, unknown argument, arguments that are not an object, a missing box:
    # each reaches TRL's tool loop, fails, and is sent back to the model as an error.
    bad_calls = [
        '<tool_call>\n{"name": "crop_tool", "arguments": {"bbox_2d": [0, 0, 500, 500]}}\n</tool_call>',
        '<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"box": [0, 0, 500, 500]}}\n</tool_call>',
        '<tool_call>\n{"name": "image_zoom_in_tool", "arguments": "zoom please"}\n</tool_call>',
        '<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"label": "cat"}}\n</tool_call>',
    ]
    responses: list[str] = []

    def script(prompt: str, row: int) -> str:
        if "<tool_response>" not in prompt:
            return bad_calls[row % 4]
        responses.append(prompt.rsplit("<tool_response>", 1)[1])
        return "<answer>red</answer>"

    model, processor = load_tiny_vlm(qwen3_path)
    script_generation(model, processor.tokenizer, script)
    trainer = SCCMRewardTrainer(
        model, args=config(tmp_path), train_dataset=dataset(), processing_class=processor
    )
    trainer.train()
    log = logs(trainer)
    assert log["tools/call_frequency"] == pytest.approx(1.0)
    assert log["tools/failure_frequency"] == pytest.approx(1.0)
    assert (
        log["rewards/sccm_sufficiency/mean"] == 0.0 and log["rewards/sccm_minimality/mean"] == 0.0
    )
    assert len(responses) == 4 and all("error" in r for r in responses)
    assert any("missing argument bbox_2d" in r for r in responses)
    assert [e.failed_calls for e in trainer.environments] == [
        0,
        0,
        0,
        1,
    ]  # only the last reached the tool


def test_rollouts_without_tool_calls(tmp_path, qwen3_path):
    model, processor = load_tiny_vlm(qwen3_path)
    script_generation(model, processor.tokenizer, lambda prompt, row: "<answer>red</answer>")
    trainer = SCCMRewardTrainer(
        model,
        args=config(tmp_path, no_crop_reward=-0.25),
        train_dataset=dataset(),
        processing_class=processor,
    )
    trainer.train()
    log = logs(trainer)
    assert log["tools/call_frequency"] == 0.0
    assert log["sccm/no_crop_fraction"] == 1.0
    assert (
        log["rewards/sccm_sufficiency/mean"] == -0.25
        and log["rewards/sccm_minimality/mean"] == -0.25
    )


def test_crops_whose_tool_response_was_dropped_earn_nothing(tmp_path, qwen3_path):
    # Every rollout zooms in, but the tool response would overflow max_completion_length:
    # TRL drops it (after the tool ran) and the rollout ends on its tool call, without an
    # answer. The model never saw the crop, so it earns neither r_s nor r_m (before the fix:
    # r_s = 1 and r_m = 0.75 from the crop recorded when the tool was called).
    model, processor = load_tiny_vlm(qwen3_path)
    call = CALL.format(box="[0, 0, 500, 500]")  # a 64x64 crop: "red" to the answerer
    script_generation(
        model,
        processor.tokenizer,
        lambda prompt, row: "<answer>red</answer>" if "<tools>" not in prompt else call,
    )
    budget = len(processor.tokenizer(call, add_special_tokens=False)["input_ids"]) + 4
    trainer = SCCMRewardTrainer(
        model,
        reward_funcs=[answer_accuracy, answer_format],
        args=config(tmp_path, max_completion_length=budget),
        train_dataset=dataset(),
        processing_class=processor,
    )
    trainer.train()
    log = logs(trainer)
    assert log["tools/call_frequency"] == pytest.approx(1.0)  # the tool did run
    assert log["rewards/answer_accuracy/mean"] == 0.0 and log["rewards/answer_format/mean"] == 0.0
    assert log["rewards/sccm_sufficiency/mean"] == 0.0
    assert log["rewards/sccm_minimality/mean"] == 0.0
    assert log["sccm/unseen_crops_per_rollout"] == 1.0 and log["sccm/crops_per_rollout"] == 0.0
    assert all(e.crops == [] and e.unseen_crops == 1 for e in trainer.environments)


def test_custom_environment_gets_the_model_rules_and_description(tmp_path, qwen3_path, caplog):
    class MyEnvironment(ZoomInEnvironment):
        """A user's environment that does not choose box rules."""

        def reset(self, **row):
            return super().reset(**row)

    model, processor = load_tiny_vlm(qwen3_path)
    trainer = SCCMRewardTrainer(
        model,
        args=config(tmp_path, box_min_side=8),
        train_dataset=dataset(),
        processing_class=processor,
        environment_factory=MyEnvironment,
    )
    [env] = trainer._environment_pool[None]
    assert isinstance(env, MyEnvironment)
    assert env.rules == BoxRules(coords="normalized_1000", min_side=8)
    [tool] = trainer.tools
    description = get_json_schema(tool)["function"]["parameters"]["properties"]["bbox_2d"]
    assert "0-1000" in description["description"] and "pixel" not in description["description"]
    # Rules the environment chose are kept, with a warning when they contradict the model's.
    absolute = BoxRules(coords="absolute")
    with caplog.at_level(logging.WARNING, logger="hf_faithful.sccm.trainer"):
        trainer = SCCMRewardTrainer(
            model,
            args=config(tmp_path),
            train_dataset=dataset(),
            processing_class=processor,
            environment_factory=functools.partial(MyEnvironment, rules=absolute),
        )
    assert trainer._environment_pool[None][0].rules == absolute
    assert "writes normalized_1000 ones" in caplog.text


def test_image_question_answer_columns_are_enough(tmp_path, qwen3_path):
    # No prompt column: the trainer builds it (DeepEyes system prompt + question) instead of
    # failing at step 1 with TRL's "a chat template was applied" error.
    model, processor = load_tiny_vlm(qwen3_path)
    script_generation(model, processor.tokenizer, make_script(1000 / 128))
    image = Image.new("RGB", (128, 128), (230, 20, 20))
    plain = Dataset.from_dict(
        {"image": [image], "question": ["What color is the image?"], "answer": ["red"]}
    )
    trainer = SCCMRewardTrainer(
        model, args=config(tmp_path), train_dataset=plain, processing_class=processor
    )
    assert trainer.train_dataset[0]["prompt"] == [
        {"role": "system", "content": DEEPEYES_SYSTEM_PROMPT},
        {"role": "user", "content": "What color is the image?"},
    ]
    trainer.train()
    assert logs(trainer)["rewards/sccm_sufficiency/mean"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="'prompt' column, or a 'question' column"):
        SCCMRewardTrainer(
            model,
            args=config(tmp_path),
            train_dataset=plain.remove_columns("question"),
            processing_class=processor,
        )


def test_save_model_and_checkpoints_write_the_sccm_card(tmp_path, qwen3_path):
    model, processor = load_tiny_vlm(qwen3_path)
    model.config._name_or_path = "Qwen/Qwen3-VL-2B-Instruct"  # as if loaded from the Hub
    script_generation(model, processor.tokenizer, make_script(1000 / 128))
    args = config(tmp_path, sufficiency_weight=2.0, save_strategy="steps", save_steps=1)
    trainer = SCCMRewardTrainer(
        model,
        reward_funcs=answered_format,
        args=args,
        train_dataset=dataset(),
        processing_class=processor,
    )
    trainer.train()
    saved = tmp_path / "saved"
    trainer.save_model(str(saved))
    cards = [saved / "README.md", tmp_path / "out" / "README.md"]
    cards.append(tmp_path / "out" / "checkpoint-1" / "README.md")
    for path in cards:
        card = ModelCard.load(path)
        text = card.text
        assert card.data.base_model == "Qwen/Qwen3-VL-2B-Instruct", path
        assert card.data.model_name == "out" and text.startswith("\n# out\n")
        assert {"sccm", "grpo", "trl", "hf-faithful"} <= set(card.data.tags)
        assert "Model Card for" not in text and "introduced in" not in text
        assert "https://arxiv.org/abs/2510.23482" in text and "@misc{liu2025faithfulness" in text
        assert "@article{shao2024deepseekmath" in text  # GRPO, the algorithm
        assert "| sccm_sufficiency | 2.0 |" in text and "| sccm_minimality | 0.5 |" in text
        assert "| answered_format | 1.0 | user-supplied |" in text
        assert "Training data: 1 row." in text
        assert "0-1000 normalized coordinates" in text
    text = ModelCard.load(saved / "README.md").text
    # The logged SCCM figures of the hand-computed step.
    assert "| rewards/sccm_sufficiency/mean | 0.25 |" in text
    assert "| rewards/sccm_minimality/mean | 0.1875 |" in text
    assert "| sccm/crops_per_rollout | 0.5 |" in text and "| global_step | 1 |" in text
    # push_to_hub passes its keyword arguments here.
    trainer.create_model_card(dataset_name="me/zoom-vqa", tags="mine")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.datasets == ["me/zoom-vqa"] and "mine" in card.data.tags
    assert "Training data: `me/zoom-vqa`, 1 row." in card.text

"""The LLM judge of free-form answers: verdict parsing, batching, the judge accuracy reward,
sufficiency through the same judge, and a real training step with the judge behind a local
OpenAI-compatible server (tests/chat_server.py)."""

from __future__ import annotations

import re

import pytest
from chat_server import ChatServer, request_text
from PIL import Image

from hf_faithful.mcot.backends import OpenAIChatBackend
from hf_faithful.mcot.zoom import BoxRules
from hf_faithful.sccm.config import SCCMConfig
from hf_faithful.sccm.environment import ZoomInEnvironment
from hf_faithful.sccm.judge import AnswerJudge, JudgeAccuracy, read_verdict
from hf_faithful.sccm.rewards import SufficiencyReward

_FIELD = re.compile(r"^(Question|Reference answer|Model answer): (.*)$", re.M)


def grader(body: dict) -> str:
    """A judge that agrees when the model's answer is a word of the reference; replies
    "maybe" to questions about the weather (unreadable)."""
    fields = dict(_FIELD.findall(request_text(body, roles=("user",))))
    if "weather" in fields["Question"]:
        return "maybe"
    words = re.findall(r"\w+", fields["Reference answer"].lower())
    return "Judgement: 1" if fields["Model answer"].lower().strip(". ") in words else "0"


class FakeBackend:
    """Scripted replies, in order; records the prompts."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.prompts: list = []

    def answer(self, prompts, max_new_tokens=128, stop=None):
        self.prompts += prompts
        out, self.replies = self.replies[: len(prompts)], self.replies[len(prompts) :]
        return out


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("1", True),
        ("0", False),
        ("Judgement: 1", True),
        ("Judgment: 0", False),
        ("**1**", True),
        ("1.", True),
        ("Yes, they agree.", True),
        ("No", False),
        ("Correct", True),
        ("incorrect", False),
        ("Reasoning: both say red.\nVerdict: 1", True),
        ("Judgement: 1\nJudgement: 0", False),  # the last label wins
        ("They agree", None),  # a verdict must come first or after a label
        ("maybe", None),
        ("", None),
        (None, None),
    ],
)
def test_read_verdict(reply, verdict):
    assert read_verdict(reply) is verdict


def test_judge_batches_dedupes_and_shortcuts():
    backend = FakeBackend(["1", "0", "garbled", "nonsense"])
    judge = AnswerJudge(backend)
    verdicts = judge.judge(
        predictions=["red", "red", "blue", "Red.", None, "green", "x"],
        references=["The umbrella is red."] * 3 + ["red", "red", None, "y"],
        questions=["What color?"] * 6 + ["Q?"],
    )
    # "red" twice -> asked once; "Red." == "red" needs no judge; None prediction -> False;
    # no reference -> None; an unreadable reply -> None
    assert verdicts == [True, True, False, True, False, None, None]
    assert judge.asked == 3 and judge.unreadable == 1
    assert len(backend.prompts) == 3
    system, user = backend.prompts[0]
    assert system["role"] == "system" and user["role"] == "user"
    assert "Question: What color?" in user["content"]
    assert "Reference answer: The umbrella is red." in user["content"]
    assert "Model answer: red" in user["content"]
    assert judge.match_batch(["a"], ["b"]) == [False]  # unreadable -> no match


def test_judge_arguments_are_checked():
    with pytest.raises(TypeError, match="answer"):
        AnswerJudge(object())
    with pytest.raises(ValueError, match="{prediction}"):
        AnswerJudge(FakeBackend([]), prompt="{question} {reference}")
    with pytest.raises(TypeError, match="AnswerJudge"):
        JudgeAccuracy(FakeBackend([]))


def test_judge_accuracy_reward_through_a_server():
    completions = [
        [{"role": "assistant", "content": "<think>..</think><answer>red</answer>"}],
        [{"role": "assistant", "content": "<answer>blue</answer>"}],
        [{"role": "assistant", "content": ""}],  # ended without text: no answer
        [{"role": "assistant", "content": "<answer>sunny</answer>"}],
        [{"role": "assistant", "content": "<answer>red</answer>"}],
    ]
    prompts = [[{"role": "user", "content": "What is the weather?"}]] * 5
    logged: dict = {}
    with ChatServer(grader) as server:
        config = SCCMConfig(
            output_dir="unused",
            use_cpu=True,
            report_to=[],
            answer_match="judge",
            judge_model="judge",
            judge_base_url=server.base_url,
            judge_max_workers=3,
        )
        judge = config.build_judge()
        assert isinstance(judge.backend, OpenAIChatBackend) and judge.backend.max_workers == 3
        reward = JudgeAccuracy(judge)
        assert reward.__name__ == "judge_accuracy"
        rewards = reward(
            prompts=prompts,
            completions=completions,
            answer=["The umbrella is red."] * 3 + ["sunny, no clouds", None],
            question=["What color is the umbrella?"] * 3 + [None, None],
            log_metric=logged.__setitem__,
        )
    # the 4th row has no question column value: its prompt's question is asked ("weather" ->
    # unreadable); the 5th has no reference
    assert rewards == [1.0, 0.0, 0.0, None, None]
    assert len(server.requests) == 3  # red, blue, sunny; the no-answer rollout is never asked
    assert {r["model"] for r in server.requests} == {"judge"}
    assert logged == {"judge/asked_per_rollout": 3 / 5, "judge/unreadable_fraction": 1 / 5}


def _env(answer: str) -> ZoomInEnvironment:
    env = ZoomInEnvironment(BoxRules(min_side=3))
    env.reset(image=Image.new("RGB", (40, 20), "red"), question="What color is it?", answer=answer)
    env.image_zoom_in_tool(bbox_2d=[0, 0, 20, 10])
    return env


def test_sufficiency_goes_through_the_same_judge():
    # Free-form reference: exact match says no, the judge says yes; an empty sufficiency
    # reply is never sent to the judge.
    judge_backend = FakeBackend(["1", "0"])
    judge = AnswerJudge(judge_backend)
    reward = SufficiencyReward(
        lambda queries: ["<answer>red</answer>", "<answer>blue</answer>", ""],
        judge,
        prompt="Q: {question}",
    )
    envs = [_env("The image is red.") for _ in range(3)]
    call = {"type": "function", "function": {"name": "image_zoom_in_tool", "arguments": {}}}
    completions = [
        [
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {
                "role": "tool",
                "name": "image_zoom_in_tool",
                "content": [{"type": "image", "image": e.crops[0]}],
            },
            {"role": "assistant", "content": "<answer>red</answer>"},
        ]
        for e in envs
    ]
    assert reward(prompts=[[]] * 3, completions=completions, environments=envs) == [1.0, 0.0, 0.0]
    assert [e.sufficient for e in envs] == [True, False, False]
    assert len(judge_backend.prompts) == 2  # one batch, the empty answer left out
    assert "Question: What color is it?" in judge_backend.prompts[0][-1]["content"]


def test_config_judge_fields_are_checked():
    with pytest.raises(ValueError, match="judge_model"):
        SCCMConfig(output_dir="unused", use_cpu=True, report_to=[], answer_match="judge")
    with pytest.raises(ValueError, match="judge_max_workers"):
        SCCMConfig(output_dir="unused", use_cpu=True, report_to=[], judge_max_workers=0)


def test_training_step_judges_accuracy_and_sufficiency(tmp_path):
    # The hand-computed step of test_sccm_trainer, with a free-form reference: exact match
    # scores every answer wrong, the judge accepts "red" for "The image is red.".
    from test_sccm_trainer import config, dataset, make_script

    from hf_faithful.sccm.rewards import answer_accuracy
    from hf_faithful.sccm.trainer import SCCMRewardTrainer
    from hf_faithful.testing.tiny_vlm import load_tiny_vlm, save_tiny_vlm, script_generation

    model, processor = load_tiny_vlm(save_tiny_vlm(tmp_path / "tiny", family="qwen3_vl"))
    script_generation(model, processor.tokenizer, make_script(1000 / 128))
    with ChatServer(grader) as server:
        args = config(
            tmp_path, answer_match="judge", judge_model="judge", judge_base_url=server.base_url
        )
        trainer = SCCMRewardTrainer(
            model,
            reward_funcs=[answer_accuracy, JudgeAccuracy(args.build_judge())],
            args=args,
            train_dataset=dataset(answer="The image is red."),
            processing_class=processor,
        )
        assert isinstance(trainer.judge, AnswerJudge)
        assert trainer._sufficiency_reward.match is trainer.judge
        trainer.train()
    log = trainer.state.log_history[0]
    assert log["rewards/answer_accuracy/mean"] == 0.0
    # rollouts 0-2 answer "red"; rollout 3 (broken tool call) ends on its call text
    assert log["rewards/judge_accuracy/mean"] == pytest.approx(0.75)
    assert log["rewards/sccm_sufficiency/mean"] == pytest.approx(0.25)
    assert log["rewards/sccm_minimality/mean"] == pytest.approx(0.1875)
    # accuracy: "red" and the broken call's text; sufficiency: "red" and "blue"
    assert len(server.requests) == 4

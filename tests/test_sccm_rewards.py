"""SCCM reward math against hand-computed values, and the reward callables' contracts."""

from __future__ import annotations

import pytest
from PIL import Image

from hf_faithful.mcot.answers import choice_match, exact_match
from hf_faithful.mcot.messages import final_answer
from hf_faithful.mcot.zoom import Box, BoxRules
from hf_faithful.sccm.environment import ZoomInEnvironment
from hf_faithful.sccm.rewards import (
    MinimalityReward,
    SufficiencyReward,
    count_malformed_tool_calls,
    minimality_reward,
    minimality_score,
    union_area,
)

PROMPT = "Q: {question}"


def test_union_area_counts_overlaps_once():
    a, b = Box(0, 0, 10, 10), Box(5, 5, 15, 15)
    assert union_area([a, b]) == 175.0  # 100 + 100 - 25
    assert union_area([a, b]) != a.area + b.area
    assert union_area([a, Box(2, 2, 4, 4)]) == 100.0  # contained
    assert union_area([a, a]) == 100.0  # identical
    assert union_area([a, Box(20, 0, 30, 5)]) == 150.0  # disjoint
    assert union_area([]) == 0.0
    # Three boxes: pairwise overlaps 10x10=100 (A,B), 5x10=50 (B,C), 5x5... by inclusion-exclusion:
    # A=(0,0,20,20) B=(10,10,30,30) C=(25,0,35,15): |A|=400 |B|=400 |C|=150
    # A∩B=100, B∩C=(25..30)x(10..15)=25, A∩C=0, A∩B∩C=0 -> 400+400+150-100-25 = 825
    boxes = [Box(0, 0, 20, 20), Box(10, 10, 30, 30), Box(25, 0, 35, 15)]
    assert union_area(boxes) == 825.0
    # Fractional boxes (Qwen3-VL 0..1000 coordinates land between pixels).
    assert union_area([Box(0.5, 0, 1.5, 2), Box(1, 1, 2, 3)]) == pytest.approx(2 + 2 - 0.5)


def test_minimality_score_and_measures():
    image = (100, 50)  # area 5000
    boxes = [Box(0, 0, 50, 50), Box(25, 0, 75, 50)]  # union 75x50 = 3750, largest 2500
    assert minimality_score(boxes, image) == pytest.approx(1 - 3750 / 5000)
    assert minimality_score(boxes, image, "largest_crop") == pytest.approx(1 - 2500 / 5000)
    assert minimality_score([Box(0, 0, 100, 50)], image) == 0.0
    with pytest.raises(ValueError, match="measure"):
        minimality_score(boxes, image, "perimeter")


def test_minimality_reward_gating_and_no_crop():
    boxes, image = [Box(0, 0, 10, 10)], (20, 20)  # covers 1/4
    assert minimality_reward(boxes, image, True) == 0.75
    assert minimality_reward(boxes, image, False) == 0.0  # gated on sufficiency
    assert minimality_reward(boxes, image, False, requires_sufficiency=False) == 0.75
    assert minimality_reward(boxes, image, None) is None  # left out of sufficiency
    assert minimality_reward([], image, True) == 0.0
    assert minimality_reward([], image, True, no_crop_reward=None) is None
    assert minimality_reward([], image, True, no_crop_reward=-0.5) == -0.5


def _env(image_answer: str | None, boxes: list[list[int]]) -> ZoomInEnvironment:
    """An environment after a rollout that zoomed into ``boxes`` (invalid ones fail)."""
    env = ZoomInEnvironment(BoxRules(min_side=3))
    env.reset(image=Image.new("RGB", (40, 20), "red"), question="What color?", answer=image_answer)
    for box in boxes:
        try:
            env.image_zoom_in_tool(bbox_2d=box)
        except ValueError:
            pass
    return env


class RecordingAnswerer:
    """Answers sufficiency queries from a table keyed by the crops' sizes; records queries."""

    def __init__(self, replies: dict[tuple, str]):
        self.replies = replies
        self.batches: list[list] = []

    def __call__(self, queries):
        self.batches.append(queries)
        keys = [
            tuple(p["image"].size for p in q[0]["content"] if p["type"] == "image") for q in queries
        ]
        return [self.replies[k] for k in keys]


def _completion(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _rollout(env: ZoomInEnvironment, text: str, shown: int | None = None) -> list[dict]:
    """The completion TRL hands the rewards: a tool call and its response for each of the
    first ``shown`` crops (all by default), then the final turn ``text``."""
    messages = []
    for crop in env.crops[:shown]:
        call = {"type": "function", "function": {"name": "image_zoom_in_tool", "arguments": {}}}
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        content = [{"type": "image", "image": crop}]
        messages.append({"role": "tool", "name": "image_zoom_in_tool", "content": content})
    return messages + _completion(text)


def test_sufficiency_and_minimality_rewards_hand_computed():
    envs = [
        _env("red", [[0, 0, 10, 10]]),  # correct crop -> r_s 1, r_m 1 - 100/800
        _env("red", [[0, 0, 40, 20]]),  # answerer wrong on the whole image -> r_s 0, r_m 0 (gated)
        _env("red", [[0, 0, 2, 2]]),  # refused box (side 2 <= 3): no crop -> 0, 0
        _env("red", []),  # never zoomed -> 0, 0
        _env("red", [[0, 0, 10, 10], [5, 5, 15, 15]]),  # overlapping crops, union 175
        _env(None, [[0, 0, 20, 20]]),  # no reference: compared with the rollout's own answer
    ]
    answerer = RecordingAnswerer(
        {
            ((10, 10),): "<answer>Red.</answer>",
            ((40, 20),): "blue",
            ((10, 10), (10, 10)): "red",
            ((20, 20),): "<answer>green</answer>",
        }
    )
    completions = [_rollout(env, "<answer>red</answer>") for env in envs[:5]] + [
        _rollout(envs[5], "<answer>Green</answer>")
    ]
    prompts = [[{"role": "user", "content": "What color?"}]] * 6
    metrics = {}
    suff = SufficiencyReward(answerer, exact_match, PROMPT)
    mini = MinimalityReward()
    r_s = suff(
        prompts=prompts, completions=completions, environments=envs, log_metric=metrics.__setitem__
    )
    r_m = mini(completions=completions, environments=envs, log_metric=metrics.__setitem__)
    assert r_s == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert r_m == pytest.approx([1 - 100 / 800, 0.0, 0.0, 0.0, 1 - 175 / 800, 1 - 400 / 800])
    # One batch; only rollouts with crops were asked; the query holds the crops and the
    # question, not the full image nor the reasoning.
    assert len(answerer.batches) == 1 and len(answerer.batches[0]) == 4
    query = answerer.batches[0][0]
    assert [m["role"] for m in query] == ["user"]
    assert [p["type"] for p in query[0]["content"]] == ["image", "text"]
    assert query[0]["content"][1]["text"] == "Q: What color?"
    assert metrics["sccm/crops_per_rollout"] == pytest.approx((1 + 1 + 0 + 0 + 2 + 1) / 6)
    assert metrics["sccm/no_crop_fraction"] == pytest.approx(2 / 6)
    assert metrics["sccm/failed_tool_calls_per_rollout"] == pytest.approx(1 / 6)
    assert envs[0].sufficiency_answer == "Red."


def test_no_crop_none_and_skip_modes():
    envs = [_env("red", []), _env(None, [[0, 0, 10, 10]]), _env("red", [[0, 0, 10, 10]])]
    completions = [_rollout(env, "<answer>red</answer>") for env in envs]
    answerer = RecordingAnswerer({((10, 10),): "red"})
    suff = SufficiencyReward(
        answerer, exact_match, PROMPT, no_reference="skip", no_crop_reward=None
    )
    mini = MinimalityReward(no_crop_reward=None)
    assert suff(prompts=[None] * 3, completions=completions, environments=envs) == [None, None, 1.0]
    assert mini(completions=completions, environments=envs) == [
        None,
        None,
        pytest.approx(1 - 100 / 800),
    ]
    assert len(answerer.batches[0]) == 1


def test_own_answer_missing_counts_as_insufficient():
    envs = [_env(None, [[0, 0, 10, 10]])]
    answerer = RecordingAnswerer({})
    suff = SufficiencyReward(answerer, exact_match, PROMPT)
    completions = [_rollout(envs[0], "")]
    assert suff(prompts=[None], completions=completions, environments=envs) == [0.0]
    assert answerer.batches == [[]]  # nothing to ask, but the answerer is still called
    assert envs[0].crops and envs[0].sufficient is False
    assert MinimalityReward()(completions=completions, environments=envs) == [0.0]


def test_choice_matching_and_question_from_prompt():
    env = ZoomInEnvironment(BoxRules(min_side=3))
    env.reset(image=Image.new("RGB", (40, 20)), answer="(B) red")  # no question column
    env.image_zoom_in_tool([0, 0, 10, 10])
    seen = []

    def answer_fn(queries):
        seen.extend(queries)
        return ["The answer is B."]

    prompt = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "Which color? A or B"}],
        }
    ]
    suff = SufficiencyReward(answer_fn, choice_match, PROMPT)
    assert suff(prompts=[prompt], completions=[_rollout(env, "x")], environments=[env]) == [1.0]
    assert seen[0][0]["content"][-1]["text"] == "Q: Which color? A or B"


def test_crops_the_model_never_saw_earn_nothing():
    # TRL ran the tool, then dropped its response (it would overflow max_completion_length):
    # the rollout ends on the tool call, with no answer. Before the fix it scored r_s = 1 and
    # r_m = 1 - 100/800 from the crop recorded at call time.
    truncated = _env("red", [[0, 0, 10, 10]])
    # Two zooms, the second response dropped: only the first box counts for minimality.
    partly = _env("red", [[0, 0, 10, 10], [0, 0, 40, 20]])
    envs = [truncated, partly]
    call = {"type": "function", "function": {"name": "image_zoom_in_tool", "arguments": {}}}
    completions = [
        [{"role": "assistant", "content": "<think>zoom</think>", "tool_calls": [call]}],
        _rollout(partly, "<answer>red</answer>", shown=1)[:-1]
        + [{"role": "assistant", "content": "", "tool_calls": [call]}],
    ]
    answerer = RecordingAnswerer({((10, 10),): "red"})
    metrics = {}
    r_s = SufficiencyReward(answerer, exact_match, PROMPT)(
        prompts=[None] * 2,
        completions=completions,
        environments=envs,
        log_metric=metrics.__setitem__,
    )
    r_m = MinimalityReward()(completions=completions, environments=envs)
    assert r_s == [0.0, 1.0] and r_m == [0.0, pytest.approx(1 - 100 / 800)]
    assert answerer.batches == [[answerer.batches[0][0]]]  # only the crop that was seen
    assert truncated.crops == [] and truncated.unseen_crops == 1
    assert [b.to_list() for b in partly.boxes] == [[0, 0, 10, 10]] and partly.unseen_crops == 1
    assert metrics["sccm/unseen_crops_per_rollout"] == 1.0
    assert metrics["sccm/crops_per_rollout"] == 0.5


def test_minimality_requires_sufficiency_first_and_environments():
    envs = [_env("red", [[0, 0, 10, 10]])]
    with pytest.raises(RuntimeError, match="SufficiencyReward before"):
        MinimalityReward()(completions=[None], environments=envs)
    assert MinimalityReward(requires_sufficiency=False)(completions=[None], environments=envs) == [
        0.875
    ]
    with pytest.raises(ValueError, match="environment_factory"):
        MinimalityReward()(completions=[None])
    with pytest.raises(TypeError, match="ZoomInEnvironment"):
        SufficiencyReward(lambda q: [], exact_match, PROMPT)(
            prompts=[None], completions=[None], environments=[object()]
        )


def test_final_answer_and_malformed_calls():
    completion = [
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function"}]},
        {"role": "tool", "name": "image_zoom_in_tool", "content": [{"type": "image"}]},
        {"role": "assistant", "content": 'hmm <tool_call>{"name": broken</tool_call>'},
    ]
    assert count_malformed_tool_calls(completion) == 1
    assert final_answer(completion) == 'hmm <tool_call>{"name": broken</tool_call>'
    assert (
        final_answer([{"role": "assistant", "content": "<think>x</think><answer> 42 </answer>"}])
        == "42"
    )
    assert final_answer([{"role": "assistant", "content": "  "}]) is None
    assert final_answer("<answer>b</answer>") == "b"

"""Multiple-choice scoring: shuffled options, letters mapped back, option texts, the
choice judge, and one end-to-end run through the CLI."""

import argparse
import json
import re

import pytest

from hf_faithful.faithfulness import cli
from hf_faithful.faithfulness.benchmark import (
    ChoiceMatcher,
    choice_questions,
    make_item,
    map_reply,
    position_accuracy,
    read_options,
    shuffle_order,
)
from hf_faithful.faithfulness.config import FaithfulnessConfig
from hf_faithful.mcot.answers import answers_match

COLORS = ["red", "green", "blue", "yellow"]


class FakeJudge:
    """Answers every prompt with ``reply`` and keeps the prompts it was asked."""

    def __init__(self, reply="B"):
        self.reply = reply
        self.prompts = []

    def answer(self, prompts, max_new_tokens=128, stop=None):
        self.prompts += list(prompts)
        return [self.reply] * len(prompts)


def test_shuffle_is_seeded_per_record():
    # hand-checked orders (shown position -> original index) of random.Random("seed:id")
    assert shuffle_order(4, 0, "q1") == [2, 3, 0, 1]
    assert shuffle_order(4, 0, "q1") == [2, 3, 0, 1]  # same seed and id: same order
    assert shuffle_order(4, 0, "q2") == [3, 2, 0, 1]  # another id: another order
    assert shuffle_order(4, 1, "q1") == [1, 2, 3, 0]  # another seed: another order
    orders = {tuple(shuffle_order(4, 0, f"v{i}")) for i in range(3)}
    assert orders == {(1, 0, 3, 2), (2, 0, 3, 1), (3, 0, 1, 2)}


def test_item_shows_shuffled_options_and_maps_the_reference():
    # q1, seed 0: shown (A) blue (B) yellow (C) red (D) green; "red" is shown as C
    item = make_item({"question": "Color?", "options": COLORS, "reference": "red"}, "q1")
    assert item.options == ["blue", "yellow", "red", "green"]
    assert item.prompt == "Color?\n(A) blue\n(B) yellow\n(C) red\n(D) green"
    assert item.reference == "(C) red"
    # the reference given as its original letter ("A" = red) lands on the same option
    by_letter = make_item({"question": "Color?", "options": COLORS, "reference": "A"}, "q1")
    assert by_letter.reference == "(C) red"
    # dict options keep their own letters; unshuffled, the order is the letters'
    plain = make_item(
        {"question": "Q", "options": {"B": "two", "A": "one"}, "reference": "(B)"},
        "x",
        shuffle=False,
    )
    assert plain.options == ["one", "two"] and plain.reference == "(B) two"


def test_bad_options_raise_naming_the_field():
    with pytest.raises(ValueError, match="options"):
        read_options("red, green")
    with pytest.raises(ValueError, match="options"):
        read_options(["only one"])
    with pytest.raises(ValueError, match="reference 'purple'"):
        make_item({"question": "Q", "options": COLORS, "reference": "purple"}, "q1")


def test_letters_map_through_the_shuffle_and_option_texts_match():
    item = make_item({"question": "Color?", "options": COLORS, "reference": "red"}, "q1")
    matcher = ChoiceMatcher([item])
    ref = item.reference
    # the original letter of red (A) is now blue: wrong; the shown letter C is right
    assert not answers_match("A", ref, matcher)
    for reply in ("C", "(C)", "(C) red", "The answer is C.", "red", "Red.", "It is red"):
        assert answers_match(reply, ref, matcher), reply
    assert not answers_match("blue", ref, matcher)
    assert map_reply("the car is dark red", ["red", "dark red"]) == 1  # the longer text
    assert map_reply("red or blue", COLORS) is None  # two options: the rules cannot tell
    assert map_reply("no idea", COLORS) is None
    # other references fall back to the configured mode
    assert answers_match("Paris", "paris", matcher)


def test_the_judge_decides_replies_the_rules_cannot_map():
    item = make_item({"question": "Color?", "options": COLORS, "reference": "yellow"}, "q1")
    assert item.reference == "(B) yellow"
    judge = FakeJudge("B")
    matcher = ChoiceMatcher([item], judge=judge)
    assert answers_match("like a ripe banana", item.reference, matcher)
    assert answers_match("like a ripe banana", item.reference, matcher)  # asked once
    assert answers_match("B", item.reference, matcher)  # rules: the judge is not asked
    assert matcher.n_judged == 1 and matcher.n_undecided == 0 and len(judge.prompts) == 1
    text = judge.prompts[0][0]["content"][0]["text"]
    assert "(A) blue\n(B) yellow" in text and "Reply: like a ripe banana" in text
    assert "Answer with the letter only." in text
    undecided = ChoiceMatcher([item], judge=FakeJudge("I cannot tell"))
    assert not answers_match("hmm", item.reference, undecided)
    assert undecided.n_undecided == 1 and undecided.n_judged == 0
    # a settings field: copying the config must not copy the judge
    config = FaithfulnessConfig(match=matcher)
    assert config.to_dict()["match"] == "choice_options"


def test_choice_questions_and_position_accuracy():
    questions = [
        {"id": "q1", "question": "Color?", "reference": "red", "source": "f:1"},
        {"id": "q2", "question": "Free?", "reference": "x", "source": "f:2"},
        {"id": "q3", "question": "Bad?", "reference": "x", "source": "f:3"},
    ]
    records = {
        "f:1": {"question": "Color?", "options": COLORS, "reference": "red"},
        "f:2": {"question": "Free?", "reference": "x"},
        "f:3": {"question": "Bad?", "options": ["one"], "reference": "one"},
    }
    with pytest.warns(UserWarning, match="f:3: options"):
        out, items = choice_questions(questions, records)
    assert [q["id"] for q in out] == ["q1", "q2"] and len(items) == 1
    assert out[0]["reference"] == "(C) red" and out[0]["question"].endswith("(D) green")
    assert out[1] == questions[1]
    samples = [
        {"reference": "(C) red", "correct": {"original": True}},
        {"reference": "(C) red", "correct": {"original": False}},
        {"reference": "(A) x", "correct": {"original": True}},
        {"reference": "free text", "correct": {"original": True}},
    ]
    assert position_accuracy(samples) == {
        "A": {"n": 1, "accuracy": 1.0},
        "C": {"n": 2, "accuracy": 0.5},
    }


def _run(argv):
    parser = argparse.ArgumentParser(prog="hf-faithful")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["faithfulness", *argv])
    return args.func(args)


def _script(prompt, row):
    """The tiny model's replies: the judge names the option shown for "blue"; the model
    answers B, except on the top-right question, where it answers in free form."""
    if "Which option does this reply choose?" in prompt:
        return re.search(r"\(([A-D])\) blue", prompt).group(1)
    answer = "sky colored" if "top-right" in prompt else "B"
    prefilled = prompt.rstrip().endswith("<answer>")
    return f"{answer}</answer>" if prefilled else f"<think>ok</think><answer>{answer}</answer>"


def test_cli_tiny_model_on_multiple_choice_questions(tmp_path, monkeypatch):
    from hf_faithful.testing.tiny_vlm import script_generation

    def scripted_backend(*args, **kwargs):
        backend = cli_build_backend(*args, **kwargs)
        script_generation(backend.model, backend.tokenizer, _script)
        return backend

    cli_build_backend = cli.build_backend
    monkeypatch.setattr(cli, "build_backend", scripted_backend)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "questions.jsonl"
    lines = open(f"{cli.SAMPLE_DIR}/sample_questions.jsonl").read().splitlines()[:3]
    records = []
    for line in lines:
        record = json.loads(line)
        record["image"] = str(cli.SAMPLE_DIR / record["image"])
        record["options"] = COLORS
        records.append(record)
    assert "top-right" in records[2]["question"] and records[2]["reference"] == "green"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["--model", "tiny", "--data", str(data), "--judge-metrics", "", "--text-corruptions", ""]
    assert _run([*argv, "--choice-judge", "same", "--output-dir", "out"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["config"]["match"] == "choice_options"
    assert report["config"]["shuffle_options"] is True
    traces = [json.loads(t) for t in (tmp_path / "out" / "traces.jsonl").read_text().splitlines()]
    expected: dict[str, list[bool]] = {}
    for trace, record, sample in zip(traces, records, report["samples"]):
        shown = [COLORS[i] for i in shuffle_order(4, 0, record["id"])]
        assert trace["question"] == record["question"] + "\n" + "\n".join(
            f"({letter}) {text}" for letter, text in zip("ABCD", shown)
        )
        letter = "ABCD"[shown.index(record["reference"])]
        assert trace["reference"] == sample["reference"] == f"({letter}) {record['reference']}"
        # B is right where the reference is shown at B; "sky colored" is judged blue: wrong
        right = letter == "B" and record is not records[2]
        assert sample["correct"]["original"] is right
        expected.setdefault(letter, []).append(right)
    summary = report["provenance"]["multiple_choice"]
    assert summary["n_questions"] == 3 and summary["shuffled"] is True
    assert summary["n_judged"] == 1 and summary["n_judge_undecided"] == 0
    assert summary["accuracy_by_position"] == {
        k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(expected.items())
    }
    # without shuffling the options keep the record's order
    assert _run([*argv, "--no-shuffle-options", "--output-dir", "plain"]) == 0
    first = json.loads((tmp_path / "plain" / "traces.jsonl").read_text().splitlines()[0])
    assert first["question"].endswith("(A) red\n(B) green\n(C) blue\n(D) yellow")
    assert first["reference"] == "(A) red"

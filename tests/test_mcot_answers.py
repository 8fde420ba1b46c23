"""Answer extraction and matching shared by the faithfulness metrics and SCCM."""

import pytest

from hf_faithful.mcot.answers import (
    answers_match,
    extract_answer,
    extract_choice,
    get_matcher,
    normalize_answer,
)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("<think>x</think><answer> Red </answer>", "Red"),
        ("<answer>blue", "blue"),
        ("so \\boxed{42}.", "42"),
        ("no tags", None),
        (None, None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_first_of_several_answer_tags_wins_with_a_warning():
    # DeepEyes' rollouts stop at the first </answer>; what follows was never its answer
    with pytest.warns(UserWarning, match="2 <answer> tags; the first"):
        assert extract_answer("<answer>a</answer> then <answer>b</answer>") == "a"
    assert extract_answer("<answer>blue <answer>red") == "blue"  # unclosed: the first too


def test_empty_answers_match_nothing():
    assert not answers_match("", "")
    assert not answers_match("", "A")  # "A" is not an article to drop when it is all there is
    assert not answers_match(".", "?")
    assert answers_match("A", "a") and not answers_match("The", "A")
    assert normalize_answer("A") == "a" and normalize_answer("a dog") == "dog"


def test_normalized_exact_match():
    assert normalize_answer("  The Red  car. ") == "red car"
    assert normalize_answer("3.0") == "3" and normalize_answer("1,000") == "1000"
    assert answers_match("A red car!", "red car")
    assert answers_match("3.0", "3")
    assert not answers_match("3.5", "3")
    assert not answers_match(None, "3")


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(c) a dog", "C"),
        ("D. cats", "D"),
        ("The answer is A.", "A"),
        ("option (b)", "B"),
        ("red", None),
        ("A", "A"),
        ("(A)", "A"),
        ("A.", "A"),
        ("a", "A"),
        ("Option A", "A"),
        ("Option A is correct.", "A"),
        ("answer: A", "A"),
        ("The answer is B because the sign is red.", "B"),
        ("The answer is (a) dog.", "A"),
        # the article "a" is not option A
        ("The answer is a dog.", None),
        ("Answer: A dog on a mat", None),
        ("The answer is an apple.", None),
        ("The options are unclear.", None),
    ],
)
def test_extract_choice(text, letter):
    assert extract_choice(text) == letter


def test_choice_match_and_fallback():
    assert answers_match("(B) red", "B", "choice")
    assert not answers_match("(A) red", "B", "choice")
    assert answers_match("red", "Red.", "choice")  # no letter on either side: exact match
    assert not answers_match("The answer is a dog.", "A", "choice")
    assert answers_match("a dog.", "A dog", "choice")  # no option on either side


def test_callable_and_bad_mode():
    def contains(prediction, reference):
        return reference.lower() in prediction.lower()

    assert answers_match("it is RED", "red", contains)
    assert get_matcher(contains) is contains
    with pytest.raises(ValueError, match="match must be one of"):
        get_matcher("fuzzy")

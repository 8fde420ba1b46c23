"""Reading a judge's reply: scores in their many spellings."""

import pytest

from hf_faithful.faithfulness.judge import parse_score, read_score


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 8", 0.8),
        ('{"score": 3}', 0.3),
        ("I'd say 9/10.", 0.9),
        ("5", 0.5),
        ("Yes.", 1.0),
        ("no", 0.0),
        ("Score: 12", None),
        ("hmm", None),
        # the judge is asked for 0-10 (judge_reliability.txt): 0.8 there is 0.08 of 1
        ("score: 0.8", 0.08),
        ("Score: 0.8/1", 0.8),
        ("**Score:** 6.5", 0.65),
        ("The score is 8 out of 10.", 0.8),
        ("Score: 7. The 2 crops show the sign.", 0.7),
        ('{"score": "7"}', 0.7),
        ("**7**", 0.7),
        ("Score: 10", 1.0),
        # a negative score, with the unicode minus or not, is out of range, not 3
        ("Score: \u22123", None),
        ("Score: -3", None),
        ("-3", None),
        # numbers that are not given as the score
        ("The 3 crops are fine", None),
        ("3/4 crops show the sign", None),
        ("I scored it 7", None),
    ],
)
def test_parse_judge_scores(reply, score):
    assert parse_score(reply) == (None if score is None else pytest.approx(score))


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("Score: \u22123", "score -3 is outside 0..10"),
        ("Score: 12", "score 12 is outside 0..10"),
        ("Score: 6/5", "score 6 is outside 0..5"),
        ("Score: 5/0", "denominator <= 0"),
        ("The 3 crops are fine", "no score in the reply"),
        ('{"score": null}', "'score' must be a number"),
    ],
)
def test_read_score_says_why_there_is_none(reply, reason):
    with pytest.raises(ValueError, match=reason):
        read_score(reply)


def test_scale():
    assert read_score("Score: 0.5", scale=1) == 0.5 and read_score("4/5", scale=5) == 0.8
    with pytest.raises(ValueError, match="scale must be > 0"):
        parse_score("Score: 1", scale=0)

"""Reading a judge's reply: scores in their many spellings."""

import pytest

from hf_faithful.faithfulness.judge import parse_score


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
    ],
)
def test_parse_judge_scores(reply, score):
    assert parse_score(reply) == (None if score is None else pytest.approx(score))

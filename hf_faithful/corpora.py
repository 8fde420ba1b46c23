"""Bundled real text (WikiText-2 valid/test) and the project's fixed split of it.

The split keeps evaluation text unseen: the reference model trains on Project
Gutenberg plus the first 70% of WikiText-2 valid, pruning calibrates on the last 30%
of valid, and perplexity is reported on WikiText-2 test. See
``hf_faithful/assets/data/README.md`` for sources and licenses.
"""

from __future__ import annotations

from functools import cache

from hf_faithful.assets import DATA_DIR

WIKITEXT2_SPLITS = ("valid", "test")
TRAIN_FRACTION_OF_VALID = 0.7


@cache
def wikitext2(split: str) -> str:
    """Raw text of a WikiText-2 split ("valid" or "test")."""
    if split not in WIKITEXT2_SPLITS:
        raise ValueError(f"split must be one of {WIKITEXT2_SPLITS}, got {split!r}")
    return (DATA_DIR / "wikitext-2" / f"{split}.txt").read_text(encoding="utf-8")


def _valid_cut() -> int:
    """Line index where the training part of WikiText-2 valid ends."""
    return int(len(wikitext2("valid").splitlines()) * TRAIN_FRACTION_OF_VALID)


def wikitext2_valid_train_part() -> str:
    """First 70% of WikiText-2 valid (by lines): reference-model training text."""
    return "\n".join(wikitext2("valid").splitlines()[: _valid_cut()])


def calibration_text() -> str:
    """Last 30% of WikiText-2 valid (by lines): the default pruning calibration text."""
    return "\n".join(wikitext2("valid").splitlines()[_valid_cut() :])


def wikitext2_test() -> str:
    """WikiText-2 test: the perplexity benchmark of the pruning paper."""
    return wikitext2("test")

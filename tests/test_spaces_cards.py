"""The Spaces' README metadata against the Hub's Space configuration rules.

The Hub refuses a push whose card breaks them (e.g. a ``short_description`` over 60
characters), so they are checked here, offline, with huggingface_hub's own card classes.
"""

from __future__ import annotations

import pytest
import yaml
from huggingface_hub import SpaceCard, SpaceCardData
from huggingface_hub.constants import SPACES_SDK_TYPES
from spaces_utils import SPACES_DIR

# https://huggingface.co/docs/hub/spaces-config-reference
COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
REQUIRED = ("title", "emoji", "colorFrom", "colorTo", "sdk", "app_file", "short_description")
SHORT_DESCRIPTION_MAX = 60
CARDS = sorted(SPACES_DIR.glob("*/README.md"))


def _front_matter(path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{path}: the card must open with a YAML block"
    return yaml.safe_load(text.split("---\n")[1])


def test_every_space_has_a_card():
    assert {p.parent.name for p in CARDS} == {p.parent.name for p in SPACES_DIR.glob("*/app.py")}
    assert len(CARDS) >= 2


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.parent.name)
def test_space_card_metadata(path):
    raw = _front_matter(path)
    card = SpaceCard.load(path)
    data = card.data
    assert isinstance(data, SpaceCardData)
    assert data.to_dict() == raw  # nothing dropped or renamed on the way through the Hub class
    missing = [key for key in REQUIRED if not raw.get(key)]
    assert not missing, f"{path}: missing {missing}"
    assert all(isinstance(raw[key], str) for key in REQUIRED)
    assert len(raw["short_description"]) <= SHORT_DESCRIPTION_MAX, (
        f"{path}: short_description has {len(raw['short_description'])} characters, "
        f"the Hub accepts at most {SHORT_DESCRIPTION_MAX}"
    )
    assert raw["sdk"] in SPACES_SDK_TYPES
    assert raw["colorFrom"] in COLORS and raw["colorTo"] in COLORS
    assert not any(ch.isascii() and not ch.isspace() for ch in raw["emoji"].strip()), (
        f"{path}: emoji must be emoji characters only, got {raw['emoji']!r}"
    )
    assert (path.parent / raw["app_file"]).is_file()
    if raw["sdk"] in ("gradio", "streamlit"):
        # Quoted strings: unquoted YAML turns 3.10 into the float 3.1.
        assert isinstance(raw.get("sdk_version"), str)
        assert isinstance(raw.get("python_version", ""), str)
    assert isinstance(raw.get("pinned", False), bool)
    tags = raw.get("tags", [])
    assert isinstance(tags, list) and all(isinstance(t, str) and t for t in tags)

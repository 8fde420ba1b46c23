"""add_dataclass_arguments / dataclass_from_args: options built from config fields."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from hf_faithful.cli_utils import add_dataclass_arguments, dataclass_from_args


@dataclass
class _Config:
    steps: int = field(default=3, metadata={"help": "how many steps"})
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"
    name: str | None = None
    folder: Path | None = None
    verbose: bool = False
    tags: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _parse(argv, **kwargs):
    parser = argparse.ArgumentParser()
    added = add_dataclass_arguments(parser, _Config, **kwargs)
    return parser, added, parser.parse_args(argv)


def test_defaults_come_from_the_dataclass():
    _, added, args = _parse([])
    assert added == ["steps", "rate", "mode", "name", "folder", "verbose", "tags", "extra"]
    assert dataclass_from_args(_Config, args) == _Config()


def test_values_types_choices_and_aliases():
    argv = ["--n", "7", "--rate", "0.25", "--mode", "b", "--name", "x", "--folder", "/tmp/f"]
    argv += ["--verbose", "--tags", "p", "q", "--extra", '{"k": 1}']
    _, _, args = _parse(argv, aliases={"steps": ["--n"]})
    config = dataclass_from_args(_Config, args)
    assert config == _Config(7, 0.25, "b", "x", Path("/tmp/f"), True, ["p", "q"], {"k": 1})
    with pytest.raises(SystemExit):
        _parse(["--mode", "c"])


def test_exclude_include_defaults_and_overrides():
    parser, added, args = _parse([], exclude=["extra", "tags"], defaults={"steps": 9})
    assert "extra" not in added and args.steps == 9
    assert "how many steps" in parser.format_help()
    config = dataclass_from_args(_Config, args, extra={"base": "m"})
    assert config.extra == {"base": "m"} and config.tags == [] and config.steps == 9
    _, added, _ = _parse([], include=["rate"])
    assert added == ["rate"]


def test_unknown_names_are_reported():
    with pytest.raises(ValueError, match="no field"):
        _parse([], exclude=["nope"])
    with pytest.raises(ValueError, match="no field"):
        dataclass_from_args(_Config, argparse.Namespace(), nope=1)

"""Build argparse options from a config dataclass, so CLI defaults live in the config.

Config fields follow TRL's idiom, ``field(default=..., metadata={"help": "..."})``.
:func:`add_dataclass_arguments` adds one ``--field-name`` option per field (its
``dest`` is the field name, its help the field's ``metadata["help"]``), and
:func:`dataclass_from_args` builds the config back from the parsed namespace, so a
command never copies fields by hand. It works on subparsers and argument groups,
which ``transformers.HfArgumentParser`` (a parser class of its own) does not.

Supported field types: ``bool`` (``--flag`` / ``--no-flag``), ``int``, ``float``,
``str``, ``pathlib.Path``, ``Literal[...]`` (choices), ``X | None``, ``list[X]`` /
``tuple[X, ...]`` (several values) and ``dict`` (a JSON object).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


def option_name(name: str) -> str:
    """``max_steps`` -> ``--max-steps``."""
    return "--" + name.replace("_", "-")


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _argument_kwargs(field: dataclasses.Field, tp: Any, default: Any) -> dict[str, Any]:
    """argparse keyword arguments for one dataclass field of (resolved) type ``tp``."""
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    kwargs: dict[str, Any] = {"dest": field.name, "default": default}
    help_text = field.metadata.get("help", "").replace("%", "%%")  # argparse formats help
    kwargs["help"] = f"{help_text} (default: %(default)s)".strip()
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is Literal:
        choices = typing.get_args(tp)
        kwargs["choices"] = choices
        kwargs["type"] = type(choices[0])
    elif origin in (list, tuple, Sequence) or tp in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        kwargs["nargs"] = "*"
        if args and callable(args[0]) and typing.get_origin(args[0]) is None:
            kwargs["type"] = args[0]
    elif tp is dict or origin in (dict, Mapping):
        kwargs["type"] = json.loads
        kwargs.setdefault("metavar", "JSON")
    elif isinstance(tp, type):
        kwargs["type"] = tp
    else:
        raise TypeError(
            f"field {field.name!r} has type {tp!r}, which add_dataclass_arguments cannot parse; "
            "exclude it or give it a simpler type"
        )
    return kwargs


def _defaults_of(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    include: Collection[str] | None = None,
    exclude: Collection[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """Add one option per field of dataclass ``cls`` to ``parser`` (or an argument group).

    ``include`` / ``exclude`` select fields by name; ``aliases`` maps a field to extra
    option strings (e.g. ``{"max_steps": ["--steps"]}`` keeps an old flag working);
    ``defaults`` overrides a field's default on the command line only. Fields are
    added in declaration order; returns the names of the fields added.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls must be a dataclass, got {cls!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    aliases = dict(aliases or {})
    defaults = dict(defaults or {})
    for label, given in (
        ("include", include or ()),
        ("exclude", exclude),
        ("aliases", aliases),
        ("defaults", defaults),
    ):
        unknown = sorted(set(given) - names)
        if unknown:
            raise ValueError(f"{label}: {cls.__name__} has no field(s) {unknown}")
    hints = typing.get_type_hints(cls)
    base_defaults = _defaults_of(cls)
    added = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in exclude or (include is not None and f.name not in include):
            continue
        default = defaults.get(f.name, base_defaults.get(f.name))
        kwargs = _argument_kwargs(f, hints[f.name], default)
        if f.name not in base_defaults and f.name not in defaults:
            kwargs["required"] = True
        parser.add_argument(option_name(f.name), *aliases.get(f.name, ()), **kwargs)
        added.append(f.name)
    return added


def dataclass_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build ``cls`` from the fields present in ``args``; ``overrides`` win.

    Fields that ``args`` lacks (excluded from the parser) keep the dataclass default,
    so the config's own validation (``__post_init__``) sees every value.
    """
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}")
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    values.update(overrides)
    return cls(**values)

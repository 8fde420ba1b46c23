"""`hf-faithful` command line.

Each half of the package owns its commands: a module listed in ``_COMMAND_MODULES``
defines ``register(subparsers)``, which adds its subparser(s) and sets ``func`` to a
callable taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hf_faithful import __version__

_COMMAND_MODULES = (
    "hf_faithful.evaluation.cli",  # evaluate
    "hf_faithful.pruning.cli",  # prune
    "hf_faithful.pruning.recover_cli",  # recover
    "hf_faithful.faithfulness.cli",  # faithfulness
    "hf_faithful.sccm.cli",  # sccm
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-faithful",
        description="Faithful visual thinking and backprop-free structural pruning.",
    )
    parser.add_argument("--version", action="version", version=f"hf-faithful {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # Bad input is reported in one line naming the problem, not as a traceback.
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"hf-faithful {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

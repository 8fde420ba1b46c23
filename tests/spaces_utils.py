"""Helpers of the Space tests: import an app by path and serve it headless."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"


def import_app(name: str) -> ModuleType:
    """``spaces/<name>/app.py`` as a module (importing does not launch it)."""
    module_name = f"space_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, SPACES_DIR / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while importing
    spec.loader.exec_module(module)
    return module


@contextmanager
def launched(name: str) -> Iterator[tuple[ModuleType, object]]:
    """The app module and its demo, served on 127.0.0.1 until the block ends."""
    app = import_app(name)
    demo = app.build_demo()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield app, demo
    finally:
        demo.close()

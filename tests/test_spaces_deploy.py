"""Each Space folder deploys as is: Hugging Face pip-installs requirements.txt before it
copies the Space's files, so hf-faithful ships unpacked next to app.py (`make
space-wheels`) and requirements.txt holds exactly hf-faithful's dependencies."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from spaces_utils import SPACES_DIR

ROOT = SPACES_DIR.parent
SPACES = sorted(p.parent.name for p in SPACES_DIR.glob("*/app.py"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(name: str) -> tuple[list[str], list[Requirement]]:
    """(pip options, requirements) of a Space's requirements.txt."""
    options, requirements = [], []
    for line in (SPACES_DIR / name / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        (options if line.startswith("-") else requirements).append(line)
    return options, [Requirement(r) for r in requirements]


def test_there_are_spaces():
    assert SPACES == ["faithfulness_inspector", "pruning_explorer"]


@pytest.mark.parametrize("name", SPACES)
def test_requirements_are_hf_faithfuls_dependencies(name):
    options, requirements = _requirements(name)
    # nothing Hugging Face's builder cannot install before the folder is copied
    text = (SPACES_DIR / name / "requirements.txt").read_text()
    assert "git+" not in text and ".whl" not in re.sub(r"#.*", "", text)
    assert "hf-faithful" not in {r.name for r in requirements}
    expected = PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["spaces"]
    assert sorted(map(str, requirements)) == sorted(str(Requirement(r)) for r in expected)
    assert options == ["--extra-index-url https://download.pytorch.org/whl/cpu"]


@pytest.mark.parametrize("name", SPACES)
def test_readme_documents_the_deploy(name):
    readme = (SPACES_DIR / name / "README.md").read_text()
    assert "make space-wheels" in readme
    pattern = rf"hf upload <user>/[\w-]+ spaces/{name} --repo-type space"
    assert re.search(pattern, readme), f"{name}: no `hf upload` command"


@pytest.mark.slow
def test_make_space_wheels_unpacks_an_importable_package(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    spaces = tmp_path / "spaces"
    shutil.copytree(
        SPACES_DIR, spaces, ignore=shutil.ignore_patterns("hf_faithful*", "__pycache__")
    )
    command = [make, "-C", str(ROOT), "space-wheels", f"SPACES_DIR={spaces}"]
    command += [f"SPACE_WHEEL_DIR={tmp_path / 'wheel'}", f"SPACE_PY={sys.executable}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    version = PYPROJECT["version"]
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    assert wheel.name == f"hf_faithful-{version}-py3-none-any.whl"
    probe = (
        "import importlib.metadata as m, hf_faithful\n"
        "from hf_faithful.assets import MODEL_CARDS_DIR\n"
        "print(hf_faithful.__file__, m.version('hf-faithful'), MODEL_CARDS_DIR.is_dir())"
    )
    for name in SPACES:
        space = spaces / name
        assert (space / "hf_faithful" / "__init__.py").is_file()
        assert (space / f"hf_faithful-{version}.dist-info" / "METADATA").is_file()
        # run from the Space folder, as the Space runs app.py: the unpacked copy wins over
        # the development install
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out = subprocess.run(
            [sys.executable, "-c", probe], cwd=space, capture_output=True, text=True, env=env
        )
        assert out.returncode == 0, out.stderr[-2000:]
        path, got_version, cards = out.stdout.split()
        assert Path(path).resolve() == (space / "hf_faithful" / "__init__.py").resolve()
        assert got_version == version and cards == "True"
    # a second run replaces the copy (no stale files)
    (spaces / SPACES[0] / "hf_faithful" / "stale.py").write_text("")
    assert subprocess.run(command, capture_output=True, timeout=600).returncode == 0
    assert not (spaces / SPACES[0] / "hf_faithful" / "stale.py").exists()

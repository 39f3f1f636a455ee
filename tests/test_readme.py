"""Every example in the README runs (the set-up commands are run by CI itself)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "sample_raws").symlink_to(ROOT / "sample_raws")
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_starts_with_the_two_commands():
    lang, body = BLOCKS[0]
    lines = [l for l in body.strip().splitlines() if l.strip()]
    assert lang == "bash" and len(lines) == 2
    assert lines[0].startswith("python -m pip install") and "rawdemosaic convert sample_raws/" in lines[0]
    assert lines[1] == "python -m pytest -q -n auto"
    assert lines[1] in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "bash" and i > 0])
def test_shell_examples(index, workdir):
    for line in BLOCKS[index][1].strip().splitlines():
        r = subprocess.run(line, shell=True, capture_output=True, text=True, cwd=workdir, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        assert r.returncode == 0, f"{line}\n{r.stderr}"


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "python"])
def test_python_examples(index, workdir):
    code = BLOCKS[index][1]
    exec(compile(code, f"README block {index}", "exec"), {"__name__": "__readme__"})

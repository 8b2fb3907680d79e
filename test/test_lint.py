"""The code base's own checks, run by `make test`: ruff with the flake8 settings of setup.cfg
(ruff.toml) on the whole repository, and mypy on the typed core (model/, runtime/, control/).

Both tools come with the test extra (`pip install -e '.[test]'`, which `make test` runs); where
they are not installed (a colcon build with only rosdep's pytest) the checks skip and say so.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MYPY_TARGETS = ('ee_seg_ros/model', 'ee_seg_ros/runtime', 'ee_seg_ros/control')


def _tool(name: str):
    return pytest.mark.skipif(importlib.util.find_spec(name) is None,
                              reason=f'{name} is not installed (pip install -e ".[test]")')


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', *cmd], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@_tool('ruff')
def test_ruff_finds_nothing():
    result = _run('ruff', 'check', '--no-cache', '.')
    assert result.returncode == 0, result.stdout + result.stderr


@_tool('mypy')
def test_mypy_on_the_typed_core():
    result = _run('mypy', *MYPY_TARGETS)
    assert result.returncode == 0, result.stdout + result.stderr

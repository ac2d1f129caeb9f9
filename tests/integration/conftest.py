from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHILDREN = Path(__file__).with_name("children.py")


@pytest.fixture
def child_env() -> dict[str, str]:
    """The environment of child processes: they import the installed
    ``eventkernel``, never the source folders by their own names."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILDREN), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

"""The guardrails CI runs: ruff (lint and import order) and mypy, configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, cwd=ROOT)


def test_ruff_finds_nothing_in_src_tests_and_benchmarks():
    pytest.importorskip("ruff")
    proc = _run("ruff", "check", "--no-cache", "src", "tests", "benchmarks")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_passes_on_src():
    pytest.importorskip("mypy")
    proc = _run("mypy", "src")
    assert proc.returncode == 0, proc.stdout + proc.stderr

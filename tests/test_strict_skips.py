"""conftest's guard: under CI a test skipped for a missing test dependency fails; other skips stay skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SAMPLE = '''
import pytest

def test_needs_a_missing_library():
    pytest.importorskip("tripletnet_no_such_library")

def test_skipped_for_another_reason():
    pytest.skip("not on this platform")

def test_passes():
    assert True
'''

SAMPLE_MODULE_LEVEL = '''
import pytest

pytest.importorskip("tripletnet_no_such_library_either")

def test_never_collected():
    assert True
'''


def _run_sample(tmp_path: Path, ci: str | None, *samples: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text("from _strict_skips import pytest_make_collect_report, pytest_runtest_makereport\n")
    for number, sample in enumerate(samples):
        (tmp_path / f"test_sample_{number}.py").write_text(sample)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_under_ci_a_missing_test_dependency_fails_and_other_skips_stay_skips(tmp_path, ci):
    proc = _run_sample(tmp_path, ci, SAMPLE)
    assert proc.returncode == 1, proc.stdout
    summary = proc.stdout.strip().splitlines()[-1]
    assert "1 failed" in summary and "1 passed" in summary and "1 skipped" in summary, summary
    assert "'tripletnet_no_such_library' is not installed" in proc.stdout
    assert "not on this platform" in proc.stdout


def test_under_ci_a_module_level_importorskip_is_a_collection_error(tmp_path):
    proc = _run_sample(tmp_path, "true", SAMPLE_MODULE_LEVEL)
    assert proc.returncode != 0, proc.stdout
    assert "1 error" in proc.stdout.strip().splitlines()[-1]
    assert "'tripletnet_no_such_library_either' is not installed" in proc.stdout


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_outside_ci_a_missing_test_dependency_is_a_skip(tmp_path, ci):
    proc = _run_sample(tmp_path, ci, SAMPLE, SAMPLE_MODULE_LEVEL)
    assert proc.returncode == 0, proc.stdout
    summary = proc.stdout.strip().splitlines()[-1]
    assert "3 skipped" in summary and "1 passed" in summary and "failed" not in summary, summary

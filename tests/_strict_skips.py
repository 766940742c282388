"""Under CI (``CI=true``), a test skipped because a test dependency is missing fails instead.

``pytest.importorskip("sklearn.metrics")`` skips quietly where scikit-learn is not installed,
which is right on a contributor's machine but would let CI pass without the comparisons against
reference libraries ever running. The hooks here are imported by conftest.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from typing import Any

import pytest

# The reason pytest.importorskip gives: "could not import 'sklearn.metrics': No module named 'sklearn'".
_MISSING_IMPORT = re.compile(r"could not import '([^']+)'")


def strict_about_dependencies() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def missing_dependency(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    """The module a skipped report could not import, or None for any other outcome or skip reason."""
    if not report.skipped:
        return None
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    match = _MISSING_IMPORT.search(reason)
    return match.group(1) if match else None


def _fail_if_missing_dependency(report: Any) -> None:
    module = missing_dependency(report)
    if module is not None and strict_about_dependencies():
        report.outcome = "failed"
        report.longrepr = (
            f"test dependency {module!r} is not installed; under CI a missing test dependency is a failure, "
            "not a skip (install them with: pip install -e '.[test]')"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    _fail_if_missing_dependency(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    report = yield  # a module-level importorskip skips the whole module at collection
    _fail_if_missing_dependency(report)
    return report

"""Timing helpers: median of repeats after warm-up, and a subprocess runner that returns JSON.

A worker subprocess prints one line ``RESULT_PREFIX + json`` on stdout; the parent finds it among
whatever else the child printed. A child that fails, is killed or runs past its timeout yields a
:class:`CaseResult` with ``error`` set, so the report can say "could not run: <reason>".
"""

from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import REPO_ROOT

RESULT_PREFIX = "BENCHMARK-RESULT "


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median of ``samples`` (taken after the warm-up calls)."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def repeats(self) -> int:
        return len(self.samples)


def measure(fn: Callable[[], object], repeats: int, warmup: int = 1, budget_seconds: float | None = None) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then up to ``repeats`` times timed.

    With a budget, timing stops before a call that would likely take the total past it (at least
    one call is always timed), so a slow case reports fewer repeats instead of running past its
    subprocess timeout.
    """
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < max(1, repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
        spent += samples[-1]
        if budget_seconds is not None and spent + samples[-1] > budget_seconds:
            break
    return Timing(tuple(samples))


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cap_address_space(gib: float) -> None:
    """Make allocations beyond ``gib`` fail inside this process (a clean MemoryError/RuntimeError)
    instead of pushing a shared machine into swap or the OOM killer."""
    limit = int(gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def thread_env(threads: int) -> dict[str, str]:
    """The environment for a child that should use ``threads`` CPU threads everywhere."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def emit(data: dict[str, Any]) -> None:
    """What a worker subprocess calls last: its result as one tagged JSON line on stdout."""
    print(RESULT_PREFIX + json.dumps(data), flush=True)


def run_worker(main: Callable[[], dict[str, Any]], *, threads: int | None = None, memory_cap_gib: float | None = None) -> None:
    """Run a worker body and emit its result, or its error as a one-line reason.

    ``memory_cap_gib`` and ``threads``, when given, are applied first (see :func:`cap_address_space`).
    """
    try:
        if memory_cap_gib is not None:
            cap_address_space(memory_cap_gib)
        if threads is not None:
            set_threads(threads)
        result = main()
    except MemoryError as exc:
        emit({"error": f"out of memory ({exc or 'MemoryError'})"})
        sys.exit(1)
    except RuntimeError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "can't allocate memory" in text or "not enough memory" in text:
            # torch's message names the one allocation that failed, not the total: say what happened.
            text = "out of memory (an allocation failed under the address-space cap)"
        emit({"error": text[:300]})
        sys.exit(1)
    emit(result)


@dataclass
class CaseResult:
    """One subprocess: its JSON result (or the reason it has none) and its whole wall time."""

    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def run_subprocess(
    args: Sequence[str], timeout: float, threads: int, cwd: Path = REPO_ROOT, expect_json: bool = True
) -> CaseResult:
    """Run ``args`` as a child in its own process group; wall time covers the whole process.

    On timeout the child's whole group (which we created) is killed. With ``expect_json`` the
    child's tagged result line is parsed; otherwise an exit status of 0 is success.
    """
    started = time.perf_counter()
    child = subprocess.Popen(
        list(args), cwd=cwd, env=thread_env(threads), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return CaseResult(error=f"timed out after {timeout:.0f} s", wall_seconds=time.perf_counter() - started)
    wall = time.perf_counter() - started

    data: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line[len(RESULT_PREFIX):])
    if "error" in data:
        return CaseResult(error=str(data["error"]), wall_seconds=wall)
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        hint = " (likely the kernel's out-of-memory killer)" if name == "SIGKILL" else ""
        return CaseResult(error=f"killed by {name}{hint}", wall_seconds=wall)
    if child.returncode != 0 or (expect_json and not data):
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no output")
        return CaseResult(error=f"exit status {child.returncode}: {last.strip()[:300]}", wall_seconds=wall)
    return CaseResult(data=data, wall_seconds=wall)

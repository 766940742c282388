"""What the results were measured on: machine, library versions, code version, load."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from .common import REPO_ROOT

# CPU features that decide which fp32/bf16 kernels oneDNN and MKL can use.
INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (empty off Linux)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def describe(threads: int) -> list[str]:
    """Markdown bullet lines for the RESULTS.md header."""
    import torch

    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    have = [flag for flag in INTERESTING_FLAGS if flag in flags]
    memory = _memory_gib()
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--", "src")
    code = f"git {commit}" + (" with uncommitted changes in src/ (measured as they were on disk)" if dirty else ", src/ clean")
    return [
        f"- **Machine**: {info.get('model name', platform.processor() or 'unknown CPU')}, "
        f"{os.cpu_count()} logical cores"
        + (f", {memory:.0f} GiB RAM" if memory else "")
        + f"; CPU flags: {', '.join(have) or 'none of ' + ', '.join(INTERESTING_FLAGS)}",
        f"- **Software**: Python {platform.python_version()}, torch {torch.__version__}, numpy {_version('numpy')}, "
        f"pytorch-metric-learning {_version('pytorch-metric-learning')}, scikit-learn {_version('scikit-learn')}, "
        f"openTSNE {_version('openTSNE')}",
        f"- **Torch threads**: {torch.get_num_threads()} (`torch.set_num_threads({threads})` here and in every "
        f"subprocess; OMP_NUM_THREADS/MKL_NUM_THREADS = {threads} in their environment)",
        f"- **Code**: tripletnet {code}",
    ]

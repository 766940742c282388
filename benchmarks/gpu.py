"""``python -m benchmarks.gpu OUT``: the one prepared device check, phase by phase, into ``OUT/gpu-report.md``.

Phases (each timed on its own, so a slow one is seen; the report is rewritten after every phase, so
a run stopped at its time limit still leaves what it measured):

1. ``environment``: the device, its memory, torch and CUDA versions, whether bf16 is native.
2. ``cuda_tests``: the suite's CUDA tests (they skip on machines without a GPU); their whole output
   goes to ``OUT/cuda-tests.log``.
3. ``mnist``: the MNIST defaults trained for ``--epochs`` epochs on the device (``--precision
   auto``: bf16 where the GPU computes it), seconds per epoch and images/s from the run's records,
   peak device memory.
4. ``evaluate``: the trained run evaluated on all test pairs (VAL at FAR 1e-3, P@1, MAP@R).
5. ``index``: the test split embedded on the device into an exact faiss-cpu index, then searched
   with 50 of its own images written as PNG files and embedded the way ``tripletnet search`` does
   (on the CPU): each must find itself first, so the device's embeddings and the CPU's agree.
6. ``speedrun``: ``--preset speedrun`` on MNIST, its training seconds and all-pairs figures against
   the goal (VAL@1e-3 >= 0.99 and P@1 >= 0.995 in at most 10 s of training).
7. ``glyphs``: with ``--glyphs DIR`` (a folder built by ``python -m benchmarks.glyphs build``), one
   training run with what a folder of unseen identities gets (``--preset many-identities``), and
   its all-pairs figures.
8. ``mnist_compile`` (GPU only, last: the phase a run short of time can best lose):
   ``--compile_epochs`` epochs with ``--compile``, to say whether torch.compile pays there (on the
   CPU it does not); skipped, with the reason, where inductor finds no C compiler or Python headers.

A phase that fails is reported as an error and the next one still runs; its traceback goes to
``OUT/phase-errors.log``. After an error that leaves the CUDA context unusable (a device-side
assert), the later phases are skipped with that reason. No phase starts after ``--deadline``
seconds (450: the issue asks for under 8 minutes), and one still running at ``--hard_limit`` (560;
the device tool stops a command at 600) ends the check with status 124, the report naming it.

``--smoke`` shrinks every phase (one epoch on a slice) so the script can be checked on a CPU.
``benchmarks/gpu_check.sh`` wraps this for the device machine (what it installs, where the data lies).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tripletnet.api import evaluate, index_gallery, load_run_images, search_gallery
from tripletnet.config import MANY_IDENTITIES_PRESET, PRESETS, SPEEDRUN_PRESET, TrainConfig
from tripletnet.training.loop import train

from .common import REPO_ROOT

CUDA_TEST_FILES = ("tests/test_training.py", "tests/test_mining.py", "tests/test_distributed.py", "tests/test_cuda.py")


@dataclass
class Report:
    """What the check measured so far; written as markdown and JSON after every phase."""

    out: Path
    phases: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, seconds: float, figures: dict[str, Any]) -> None:
        self.phases.append({"phase": name, "seconds": round(seconds, 2), **figures})
        self.write()

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu-report.json").write_text(json.dumps(self.phases, indent=2) + "\n")
        lines = ["# Device check", "", "| phase | seconds | figures |", "|---|---:|---|"]
        for phase in self.phases:
            figures = ", ".join(f"{key} {_fmt(value)}" for key, value in phase.items() if key not in ("phase", "seconds"))
            lines.append(f"| {phase['phase']} | {phase['seconds']:.1f} | {figures} |")
        (self.out / "gpu-report.md").write_text("\n".join(lines) + "\n")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _peak_memory_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def environment(device: torch.device) -> dict[str, Any]:
    try:
        import pytest

        pytest_version = pytest.__version__
    except ImportError:
        pytest_version = "missing"
    figures: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "pytest": pytest_version,
                               "device": device.type, "compile": compiler_missing() or "can build kernels"}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        figures.update(gpu=props.name, memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                       bf16=bool(torch.cuda.is_bf16_supported(including_emulation=False)),
                       multiprocessors=props.multi_processor_count)
    return figures


def cuda_tests(out: Path, timeout_seconds: float = 240) -> dict[str, Any]:
    """The CUDA tests, their whole output kept in ``out/cuda-tests.log`` (a failure's traceback must
    not cost a second GPU run)."""
    files = [name for name in CUDA_TEST_FILES if (REPO_ROOT / name).exists()]
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-k", "cuda", *files]
    out.mkdir(parents=True, exist_ok=True)
    log = out / "cuda-tests.log"
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_seconds)
    except subprocess.TimeoutExpired as stopped:
        log.write_text(_text(stopped.stdout) + _text(stopped.stderr))
        return {"error": f"the CUDA tests ran past {timeout_seconds:g} s; their output so far is in {log.name}"}
    log.write_text(done.stdout + done.stderr)
    last = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return {"exit_code": done.returncode, "summary": last, "log": log.name}


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def compiler_missing() -> str | None:
    """Why torch.compile cannot build kernels here, or None: inductor compiles its launchers with a C
    compiler against Python's headers, which a bare machine may lack."""
    import shutil
    import sysconfig

    if not any(shutil.which(name) for name in ("gcc", "cc", "clang")):
        return "no C compiler (gcc, cc or clang) on PATH"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python.h (Python's development headers)"
    return None


def _train_figures(history: list[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    epoch_seconds = [record["epoch_seconds"] for record in history]
    return {
        "epochs": len(history),
        "training_seconds": round(sum(epoch_seconds), 1),
        "seconds_per_epoch_median": round(statistics.median(epoch_seconds), 2),
        "images_per_second_median": round(statistics.median(r["images_per_second"] for r in history)),
        "peak_memory_mib": _peak_memory_mib(device),
    }


def train_run(config: TrainConfig, device: torch.device, data: Any = None) -> tuple[dict[str, Any], str]:
    _reset_peak(device)
    result = train(config, overwrite=True, data=data, log=print)
    figures = _train_figures(result.history, device)
    figures["precision"] = result.config.precision
    return figures, str(Path(config.checkpoint_path) / "last.pt")


def evaluate_run(checkpoint: str, data_path: str | None) -> dict[str, Any]:
    result = evaluate(checkpoint=checkpoint, data_path=data_path, protocol="all-pairs", clustering=False, tsne=False,
                      log=print).to_dict()
    return {key: result[key] for key in ("val", "far_reached", "precision_at_1", "map_at_r") if key in result}


def index_run(checkpoint: str, data_path: str | None, out: Path, queries: int = 50) -> dict[str, Any]:
    """Index the test split with embeddings made on the device; search it with some of its own images."""
    from PIL import Image

    started = time.perf_counter()
    built = index_gallery(checkpoint, out / "index", split="test", data_path=data_path, device="auto", log=print)
    build_seconds = time.perf_counter() - started
    images = load_run_images(checkpoint, "test", data_path, download=False, classes="all", log=print).images[:queries]
    files = []
    (out / "queries").mkdir(parents=True, exist_ok=True)
    for position, image in enumerate(images):
        # MNIST's are (H, W); a folder's (C, H, W)
        pixels = (image if image.dim() == 2 else image.permute(1, 2, 0).squeeze(2)).numpy()
        files.append(out / "queries" / f"{position}.png")
        Image.fromarray(pixels).save(files[-1])
    found = search_gallery(out / "index", files, k=1, log=print)
    first = [result["neighbours"][0] for result in found]
    return {
        "gallery": built.index.size,
        "build_seconds": round(build_seconds, 2),
        "self_found": sum(hit["index"] == position for position, hit in enumerate(first)) / len(first),
        "max_self_distance": max(hit["distance"] for hit in first),
    }


def _context_lost(device: torch.device) -> bool:
    """Whether an error left the CUDA context unusable (a device-side assert is sticky: every later
    kernel fails with it), so later phases would only repeat the first one's message."""
    if device.type != "cuda":
        return False
    try:
        torch.cuda.synchronize(device)
    except RuntimeError:
        return True
    return False


@dataclass
class Phases:
    """Runs the check's phases in turn, each timed and isolated, within the check's time.

    A phase that raises is reported and the next one runs; after one that leaves the CUDA context
    unusable, the rest are skipped with that reason. A phase that would start after ``deadline``
    seconds is skipped ("out of time"), and one still running at ``hard_limit`` seconds (a hang in a
    kernel, a compiler or a loader worker) ends the process with status 124, once the report says
    which phase it was, so the device tool's own limit never cuts the check off unreported.
    """

    report: Report
    device: torch.device
    deadline: float = 450.0
    hard_limit: float = 560.0
    started: float = field(default_factory=time.perf_counter)
    lost_in: str | None = None
    running: str | None = None
    _watchdog: threading.Timer | None = None

    def start_watchdog(self) -> None:
        self._watchdog = threading.Timer(self.hard_limit - self.elapsed(), self._out_of_time)
        self._watchdog.daemon = True
        self._watchdog.start()

    def stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _out_of_time(self) -> None:
        name = self.running or "between phases"
        self.report.add(name, self.elapsed(), {"error": f"still running after {self.hard_limit:.0f} s of the check: stopped"})
        print(f"== {name}: still running at {self.hard_limit:.0f} s, the check stops here", flush=True)
        os._exit(124)  # the main thread may be inside a kernel that never returns to Python

    def run(self, name: str, work: Callable[[], dict[str, Any]]) -> None:
        print(f"== {name}", flush=True)
        if self.lost_in is not None:
            self.report.add(name, 0.0, {"skipped": f"the CUDA context was lost in {self.lost_in}"})
            return
        if self.elapsed() > self.deadline:
            gone = f"out of time: {self.elapsed():.0f} s of the check's {self.deadline:.0f} gone"
            self.report.add(name, 0.0, {"skipped": gone})
            return
        phase_started = time.perf_counter()
        self.running = name
        try:
            figures = work()
        except Exception as exc:  # noqa: BLE001 - a failed phase is reported and the next one still runs
            figures = {"error": f"{type(exc).__name__}: {exc}"[:300], "traceback": "phase-errors.log"}
            self.report.out.mkdir(parents=True, exist_ok=True)
            with (self.report.out / "phase-errors.log").open("a") as errors:
                errors.write(f"== {name}\n{traceback.format_exc()}\n")
            if _context_lost(self.device):
                self.lost_in = name
        finally:
            self.running = None
        self.report.add(name, time.perf_counter() - phase_started, figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for gpu-report.md/json and the run folders")
    parser.add_argument("--data", default=None, help="folder holding mnist/ (default: $TRIPLETNET_DATA)")
    parser.add_argument("--glyphs", default=None, help="a glyph benchmark folder (python -m benchmarks.glyphs build)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--compile_epochs", type=int, default=5, help="GPU only: epochs of a --compile MNIST run (0 = skip)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="folder for the run folders (default: OUT/runs; the device tool brings back 8 files of its OUT)")
    parser.add_argument("--smoke", action="store_true", help="one epoch on a slice, on any device: checks the script itself")
    parser.add_argument("--deadline", type=float, default=450.0,
                        help="seconds after which no further phase starts (the issue's target: under 8 minutes)")
    parser.add_argument("--hard_limit", type=float, default=560.0,
                        help="seconds after which a phase still running is stopped (the device tool allows 600 per command)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = Report(args.out)
    phases = Phases(report, device, deadline=args.deadline, hard_limit=args.hard_limit)
    phases.start_watchdog()
    smoke = {"epochs": 1, "num_images": 1024, "eval_images": 500, "threads": 2}
    small: dict[str, Any] = smoke if args.smoke else {"epochs": args.epochs}

    phases.run("environment", lambda: environment(device))
    if device.type == "cuda":
        phases.run("cuda_tests", lambda: cuda_tests(args.out))
    runs = args.runs or args.out / "runs"
    mnist_checkpoint: list[str] = []

    def mnist() -> dict[str, Any]:
        config = TrainConfig(data_path=args.data, download=False, checkpoint_path=str(runs / "mnist"), **small)
        figures, checkpoint = train_run(config, device)
        mnist_checkpoint.append(checkpoint)
        return figures

    phases.run("mnist", mnist)
    if mnist_checkpoint:
        phases.run("evaluate", lambda: evaluate_run(mnist_checkpoint[0], args.data))
        phases.run("index", lambda: index_run(mnist_checkpoint[0], args.data, runs))

    def speedrun() -> dict[str, Any]:
        settings = {**PRESETS[SPEEDRUN_PRESET], **(smoke if args.smoke else {})}
        config = TrainConfig(data_path=args.data, download=False, checkpoint_path=str(runs / "speedrun"), **settings)
        figures, checkpoint = train_run(config, device)
        figures.update(evaluate_run(checkpoint, args.data))
        figures["goal_met"] = bool(figures["training_seconds"] <= 10 and figures.get("val", 0) >= 0.99
                                   and figures.get("precision_at_1", 0) >= 0.995)
        return figures

    phases.run("speedrun", speedrun)
    if args.glyphs:
        def glyphs() -> dict[str, Any]:
            # What a folder of unseen identities gets from the CLI: the many-identities preset.
            # A smoke run keeps every image: slices of 1,024 training and 500 test images leave
            # hundreds of identities without a pair.
            settings = {"epochs": 1, "threads": 2} if args.smoke else PRESETS[MANY_IDENTITIES_PRESET]
            config = TrainConfig(dataset=args.glyphs, checkpoint_path=str(runs / "glyphs"), **settings)
            figures, checkpoint = train_run(config, device)
            figures.update(evaluate_run(checkpoint, None))
            return figures

        phases.run("glyphs", glyphs)
    if device.type == "cuda" and args.compile_epochs:
        # Whether --compile pays on this GPU: its seconds per epoch against the eager run's above
        # (the first epoch holds the compilation).
        def mnist_compiled() -> dict[str, Any]:
            missing = compiler_missing()
            if missing:
                return {"skipped": f"torch.compile cannot build kernels here: {missing}"}
            config = TrainConfig(data_path=args.data, download=False, checkpoint_path=str(runs / "mnist-compiled"),
                                 epochs=args.compile_epochs, compile=True)
            return train_run(config, device)[0]

        phases.run("mnist_compile", mnist_compiled)
    phases.stop_watchdog()
    print((args.out / "gpu-report.md").read_text())
    return 0 if all("error" not in phase for phase in report.phases) else 1


if __name__ == "__main__":
    raise SystemExit(main())

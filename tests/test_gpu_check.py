"""The prepared device check (benchmarks/gpu.py) runs through on a CPU: a session lent a GPU has one
short window for it, so a phase that breaks must show here first, not there."""

import json
import os
import subprocess
import sys

import torch
from benchmarks import gpu
from benchmarks.common import REPO_ROOT

from tripletnet.config import PRESETS, SPEEDRUN_PRESET

from _mnist import data_root, require_dataset


def test_the_device_checks_smoke_run_measures_every_cpu_phase_without_an_error(tmp_path):
    require_dataset("mnist")
    assert gpu.main([str(tmp_path), "--smoke", "--data", data_root()]) == 0
    phases = {phase["phase"]: phase for phase in json.loads((tmp_path / "gpu-report.json").read_text())}
    assert list(phases) == ["environment", "mnist", "evaluate", "index", "speedrun"], "the CUDA-only phases skip on a CPU"
    assert not [name for name, phase in phases.items() if "error" in phase]
    assert phases["mnist"]["epochs"] == 1 and phases["mnist"]["images_per_second_median"] > 0
    assert 0 <= phases["evaluate"]["val"] <= 1 and 0 < phases["evaluate"]["precision_at_1"] <= 1
    assert phases["index"]["gallery"] == 10_000 and phases["index"]["self_found"] == 1.0, "each query finds itself"
    speedrun = phases["speedrun"]
    assert 0 < speedrun["precision_at_1"] <= 1 and speedrun["goal_met"] is False, "one epoch on a slice meets no goal"
    recorded = json.loads((tmp_path / "runs" / "speedrun" / "config.json").read_text())
    assert {key: recorded[key] for key in PRESETS[SPEEDRUN_PRESET] if key != "epochs"} == {
        key: value for key, value in PRESETS[SPEEDRUN_PRESET].items() if key != "epochs"}, "the phase trains the preset"
    assert "| speedrun |" in (tmp_path / "gpu-report.md").read_text()


def test_a_failing_phase_is_reported_with_its_traceback_kept_and_the_next_phase_still_runs(tmp_path):
    phases_run = gpu.Phases(gpu.Report(tmp_path), torch.device("cpu"))

    def broken() -> dict:
        raise ValueError("no such kernel")

    phases_run.run("broken", broken)
    phases_run.run("after", lambda: {"ran": True})
    phases = json.loads((tmp_path / "gpu-report.json").read_text())
    assert [phase["phase"] for phase in phases] == ["broken", "after"]
    assert phases[0]["error"] == "ValueError: no such kernel" and phases[1]["ran"] is True
    log = (tmp_path / "phase-errors.log").read_text()
    assert log.startswith("== broken\n") and "in broken" in log and 'raise ValueError("no such kernel")' in log


def test_after_an_error_that_loses_the_cuda_context_the_later_phases_are_skipped_saying_so(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "_context_lost", lambda device: True)  # as after a device-side assert
    phases_run = gpu.Phases(gpu.Report(tmp_path), torch.device("cpu"))
    later = []
    phases_run.run("mnist", lambda: 1 / 0)
    phases_run.run("evaluate", lambda: later.append(1) or {})
    phases = json.loads((tmp_path / "gpu-report.json").read_text())
    assert later == [] and phases[1] == {"phase": "evaluate", "seconds": 0.0, "skipped": "the CUDA context was lost in mnist"}
    assert phases[0]["error"].startswith("ZeroDivisionError")


def test_no_phase_starts_after_the_deadline(tmp_path):
    phases_run = gpu.Phases(gpu.Report(tmp_path), torch.device("cpu"), deadline=0.0)
    phases_run.started -= 1.0  # one second of the check gone
    phases_run.run("glyphs", lambda: {"ran": True})
    (phase,) = json.loads((tmp_path / "gpu-report.json").read_text())
    assert "ran" not in phase and phase["skipped"].startswith("out of time")


def test_a_phase_still_running_at_the_hard_limit_ends_the_check_with_124_and_the_report_names_it(tmp_path):
    script = (
        "import sys, time, torch\n"
        "from pathlib import Path\n"
        "from benchmarks import gpu\n"
        "phases = gpu.Phases(gpu.Report(Path(sys.argv[1])), torch.device('cpu'), hard_limit=1.0)\n"
        "phases.start_watchdog()\n"
        "phases.run('fast', lambda: {'ran': True})\n"
        "phases.run('hangs', lambda: time.sleep(60))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{REPO_ROOT}"})
    assert done.returncode == 124, done.stderr
    phases = json.loads((tmp_path / "gpu-report.json").read_text())
    assert [phase["phase"] for phase in phases] == ["fast", "hangs"]
    assert "still running after 1 s" in phases[1]["error"]

"""The prepared device check (benchmarks/gpu.py) runs through on a CPU: a session lent a GPU has one
short window for it, so a phase that breaks must show here first, not there."""

import json

from benchmarks import gpu

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
    report = gpu.Report(tmp_path)

    def broken() -> dict:
        raise ValueError("no such kernel")

    gpu._timed(report, "broken", broken)
    gpu._timed(report, "after", lambda: {"ran": True})
    phases = json.loads((tmp_path / "gpu-report.json").read_text())
    assert [phase["phase"] for phase in phases] == ["broken", "after"]
    assert phases[0]["error"] == "ValueError: no such kernel" and phases[1]["ran"] is True
    log = (tmp_path / "phase-errors.log").read_text()
    assert log.startswith("== broken\n") and "in broken" in log and 'raise ValueError("no such kernel")' in log

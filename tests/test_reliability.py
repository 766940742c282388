"""Nothing lost, nothing trusted (issue 10): kills, signals, NaN, full and read-only disks, locks, run folders.

Every run here is tiny (a few steps of 64 MNIST images): what is checked is what survives, not
what is learnt. The README's "Reliability" table quotes the counts these tests use.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from tripletnet.cli import main
from tripletnet.config import TrainConfig
from tripletnet.errors import UserError
from tripletnet.fileio import LOCK_NAME, FolderLock, WriteError
from tripletnet.training import train
from tripletnet.training.checkpoint import load_checkpoint, save_checkpoint
from tripletnet.training.runfolder import run_artefacts
from tripletnet.training.runlog import read_records

from _filesystems import small_filesystem
from _mnist import assert_same_state, data_root, require_dataset

TINY = ["--num_images", "256", "--batch_size", "64", "--eval_every", "0", "--num_val_triplets", "16",
        "--network", "reference", "--precision", "fp32", "--threads", "1", "--no-download"]


@pytest.fixture(scope="module", autouse=True)
def _needs_mnist() -> None:
    require_dataset("mnist")


def tiny_config(run_dir: Path, **changes: object) -> TrainConfig:
    values = {"num_images": 256, "batch_size": 64, "eval_every": 0, "num_val_triplets": 16, "network": "reference",
              "precision": "fp32", "threads": 1, "download": False, "data_path": data_root(),
              "checkpoint_path": str(run_dir), "epochs": 2, **changes}
    return TrainConfig().updated(values)


def _cli(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "TRIPLETNET_DATA": data_root()}
    return subprocess.Popen([sys.executable, "-m", "tripletnet", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


# --- kill -9 and SIGTERM ------------------------------------------------------------------------------
#
# Deterministic faults: tests/_kill_at.py ends the run at one named moment of one file's write
# (before the temporary is written, halfway through it, right after it replaced the file). Then the
# user does what the folder tells them: run the command again, and follow the refusal's advice.

KILL_MOMENTS = [
    ("during", "config.json", 1),  # the run's first write
    ("during", "last.pt", 1),  # the very first save
    ("after", "last.pt", 1),  # between last.pt and epoch_1.pt of the first save
    ("before", "last.pt", 2),  # epoch 2's save, before its first temporary is written
    ("during", "last.pt", 2),
    ("after", "last.pt", 2),  # between last.pt and epoch_2.pt
    ("during", "epoch_2.pt", 1),
    ("after", "epoch_2.pt", 1),  # between epoch_2.pt and its metrics line
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    code, err = _finish(_cli("train", *TINY, "--epochs", "2", "--checkpoint_path", str(run_dir)))
    assert code == 0, err
    return run_dir


def _train_at(moment: str, name: str, nth: int, *argv: str, stop_signal: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "TRIPLETNET_DATA": data_root()}
    script = Path(__file__).with_name("_kill_at.py")
    signal_args = ["--signal", stop_signal] if stop_signal else []
    return subprocess.Popen([sys.executable, str(script), moment, name, str(nth), *signal_args, "--", "train", *argv],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _advised_resume(message: str) -> str | None:
    match = re.search(r"--resume (\S+?)[,;:]?(?:\s|$)", message)
    return match.group(1) if match else None


@pytest.mark.parametrize(("moment", "name", "nth"), KILL_MOMENTS, ids=[f"{m}-{n}-{k}" for m, n, k in KILL_MOMENTS])
def test_kill_9_at_each_moment_of_a_save_then_the_advised_command_ends_bit_identical(
    tmp_path, capsys, uninterrupted, moment, name, nth
):
    run_dir = tmp_path / "run"
    command = [*TINY, "--epochs", "2", "--data_path", data_root(), "--checkpoint_path", str(run_dir)]
    code, err = _finish(_train_at(moment, name, nth, *command))
    assert code == 137, err  # it died at the moment, by os._exit
    if moment != "after":
        assert list(run_dir.glob(f".{name}.*.tmp")), "the kill left the temporary it was writing"
    if (run_dir / "last.pt").is_file():  # what the README and the interrupt message advise
        assert main(["train", *command, "--resume", str(run_dir / "last.pt")]) == 0, capsys.readouterr().err
    else:  # the same command again, and what its refusal (if any) says
        code = main(["train", *command])
        if code != 0:
            err = capsys.readouterr().err
            assert code == 2 and "--overwrite" in err and _advised_resume(err) is None, err
            assert main(["train", *command, "--overwrite"]) == 0, capsys.readouterr().err
    final, reference = load_checkpoint(run_dir / "last.pt"), load_checkpoint(uninterrupted / "last.pt")
    assert final["epoch"] == 2
    assert_same_state(final["model"], reference["model"])
    assert [r["train_loss"] for r in final["history"]] == [r["train_loss"] for r in reference["history"]]
    for epoch in (1, 2):  # every epoch file is there and holds its epoch, including the one the kill cut short
        assert load_checkpoint(run_dir / f"epoch_{epoch}.pt")["epoch"] == epoch
    assert [r["epoch"] for r in read_records(run_dir)] == [1, 2]
    assert not list(run_dir.glob(".*.tmp")), "the dead run's temporaries are removed"
    assert not (run_dir / LOCK_NAME).exists(), "a finished run folder holds no lock file"


def test_resume_refused_for_later_epochs_advises_the_newest_complete_epoch_and_that_works(tmp_path, capsys):
    # The folder a kill between epoch_2.pt and last.pt left under the old save order (epoch_2.pt first).
    run_dir = tmp_path / "run"
    command = [*TINY, "--epochs", "3", "--data_path", data_root(), "--checkpoint_path", str(run_dir)]
    assert main(["train", *command[:-4], "--epochs", "2", *command[-4:]]) == 0
    (run_dir / "last.pt").write_bytes((run_dir / "epoch_1.pt").read_bytes())
    capsys.readouterr()
    assert main(["train", *command, "--resume", str(run_dir / "last.pt")]) == 2
    err = capsys.readouterr().err
    assert _advised_resume(err) == str(run_dir / "epoch_2.pt"), err
    assert main(["train", *command, "--resume", str(run_dir / "epoch_2.pt")]) == 0
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 3


def test_sigterm_stops_like_ctrl_c_with_exit_130_and_advice_that_works(tmp_path, capsys):
    run_dir = tmp_path / "run"
    command = [*TINY, "--epochs", "3", "--data_path", data_root(), "--checkpoint_path", str(run_dir)]
    # SIGTERM halfway through the first save: the save completes, then the run stops.
    code, err = _finish(_train_at("during", "epoch_1.pt", 1, *command, stop_signal="SIGTERM"))
    assert code == 130 and "Traceback" not in err, err
    message = err.strip().splitlines()[-1]
    assert "interrupted" in message and _advised_resume(message) == str(run_dir / "last.pt"), message
    assert load_checkpoint(run_dir / "epoch_1.pt")["epoch"] == 1 and read_records(run_dir)[-1]["epoch"] == 1
    assert not (run_dir / LOCK_NAME).exists(), "the lock is released"
    assert main(["train", *command, "--resume", str(run_dir / "last.pt")]) == 0, capsys.readouterr().err
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 3


def test_sigterm_before_the_first_save_advises_a_new_run_and_no_last_pt(tmp_path, capsys):
    run_dir = tmp_path / "run"
    command = [*TINY, "--epochs", "1", "--data_path", data_root(), "--checkpoint_path", str(run_dir)]
    code, err = _finish(_train_at("step", "-", 0, *command, stop_signal="SIGTERM"))
    message = err.strip().splitlines()[-1]
    assert code == 130 and "nothing to resume" in message and "--overwrite" in message, err
    assert _advised_resume(message) is None and not (run_dir / "last.pt").exists()
    assert main(["train", *command, "--overwrite"]) == 0, capsys.readouterr().err


# --- non-finite values ---------------------------------------------------------------------------------


def _train_with_step_six_poisoned(tmp_path, monkeypatch, capsys, poison) -> tuple[int, list[str], Path]:
    """A three-epoch run whose 6th step (epoch 2, step 2 of 4) is followed by ``poison(model)``: exit code, error lines."""
    import tripletnet.training.loop as loop

    real_step = loop.train_step
    calls = {"n": 0}

    def poisoned_step(model, *args, **kwargs):
        calls["n"] += 1
        stats = real_step(model, *args, **kwargs)
        if calls["n"] == 6:
            with torch.no_grad():
                poison(model)
        return stats

    monkeypatch.setattr(loop, "train_step", poisoned_step)
    run_dir = tmp_path / "run"
    code = main(["train", *TINY, "--epochs", "3", "--data_path", data_root(), "--checkpoint_path", str(run_dir)])
    return code, [line for line in capsys.readouterr().err.splitlines() if "error" in line], run_dir


def test_a_nan_loss_stops_the_run_with_one_line_exit_1_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    code, lines, run_dir = _train_with_step_six_poisoned(
        tmp_path, monkeypatch, capsys, lambda model: next(model.parameters()).fill_(float("nan")))
    assert code == 1
    assert len(lines) == 1 and "epoch 2" in lines[0] and "lower --lr" in lines[0] and "last.pt still holds epoch 1" in lines[0]
    state = load_checkpoint(run_dir / "last.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (run_dir / "epoch_2.pt").exists()


def test_a_non_finite_gradient_with_finite_weights_and_loss_stops_the_run(tmp_path, monkeypatch, capsys):
    # The update is done and the weights stay finite; only the gradients overflowed.
    code, lines, run_dir = _train_with_step_six_poisoned(
        tmp_path, monkeypatch, capsys, lambda model: next(model.parameters()).grad.fill_(float("inf")))
    assert code == 1 and len(lines) == 1, lines
    assert "epoch 2, step 2: the gradient norm is inf" in lines[0] and "last.pt still holds epoch 1" in lines[0]
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1 and not (run_dir / "epoch_2.pt").exists()


def test_nan_in_a_batchnorm_statistic_names_the_epoch_and_what_last_pt_holds(tmp_path, monkeypatch, capsys):
    import tripletnet.training.loop as loop

    real_epoch = loop.run_epoch

    def poisoned_statistics(run, epoch, log):
        result = real_epoch(run, epoch, log)
        if epoch == 2:  # the losses and gradients were finite all epoch; a running variance overflowed
            buffer = next(b for name, b in run.model.named_buffers() if name.endswith("running_var"))
            buffer.fill_(float("nan"))
        return result

    monkeypatch.setattr(loop, "run_epoch", poisoned_statistics)
    run_dir = tmp_path / "run"
    code = main(["train", *TINY, "--epochs", "3", "--data_path", data_root(), "--checkpoint_path", str(run_dir)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert code == 1 and len(lines) == 1, err
    assert "epoch 2:" in lines[0] and "running_var" in lines[0] and f"{run_dir / 'last.pt'} still holds epoch 1" in lines[0]
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1 and not (run_dir / "epoch_2.pt").exists()


def test_a_failed_checkpoint_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    weights = {"w": torch.arange(6.0)}
    save_checkpoint(tmp_path / "last.pt", {"epoch": 1, "config": {}, "model": weights})

    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(WriteError, match="No space left"):
        save_checkpoint(tmp_path / "last.pt", {"epoch": 2, "config": {}, "model": weights})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_stale_temporaries_of_a_dead_run_go_when_the_folder_is_next_locked_and_others_stay(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, epochs=1), log=lambda m: None)
    stale = [".epoch_1.pt.0123456789abcdef.tmp", ".last.pt.fedcba9876543210.tmp", ".config.json.00112233445566ff.tmp"]
    kept = [".notes.txt.0123456789abcdef.tmp", ".last.pt.tmp", "mine.tmp"]
    for name in stale + kept:
        (run_dir / name).write_bytes(b"x" * 10)
    train(tiny_config(run_dir, epochs=2), resume=run_dir / "last.pt", log=lambda m: None)
    left = {p.name for p in run_dir.iterdir()}
    assert not left & set(stale) and set(kept) <= left and LOCK_NAME not in left


def test_evaluate_refuses_an_unknown_toml_table_as_train_does(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("[train]\nepochs = 1\n[eval]\nfar = 0.01\n[evaluation]\nfar = 0.1\n")
    for argv in (["train", "--config", str(config)], ["evaluate", "--config", str(config), "--checkpoint", "x.pt"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "unknown table [evaluation]" in err and str(config) in err and len(err.strip().splitlines()) == 1, err


def test_overflowing_learning_rates_and_margins_are_refused_before_anything_is_written(tmp_path, capsys):
    for flag, value in (("--lr", "1e300"), ("--lr", "inf"), ("--margin", "1e30")):
        assert main(["train", *TINY, flag, value, "--checkpoint_path", str(tmp_path / "run")]) == 2
        assert f"{flag} must be" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --- writes that fail ------------------------------------------------------------------------------------


def test_a_disk_that_fills_mid_checkpoint_is_one_line_exit_1_and_keeps_every_earlier_file(tmp_path, capsys):
    probe = tmp_path / "probe"
    assert main(["train", *TINY, "--epochs", "1", "--data_path", data_root(), "--checkpoint_path", str(probe)]) == 0
    checkpoint_bytes = (probe / "last.pt").stat().st_size
    capsys.readouterr()
    # Room for epoch 1 (last.pt, epoch_1.pt, metrics, config) but not for epoch 2's first checkpoint (last.pt).
    with small_filesystem(tmp_path / "fs", int(2.6 * checkpoint_bytes)) as fs:
        run_dir = fs / "run"
        code = main(["train", *TINY, "--epochs", "3", "--data_path", data_root(), "--checkpoint_path", str(run_dir)])
        err = capsys.readouterr().err
        assert code == 1, err
        error_lines = [line for line in err.splitlines() if "error" in line]
        assert len(error_lines) == 1 and "No space left on device" in error_lines[0] and "last.pt" in error_lines[0]
        assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1, "the failed write kept the old last.pt"
        assert load_checkpoint(run_dir / "epoch_1.pt")["epoch"] == 1 and not (run_dir / "epoch_2.pt").exists()
        assert not list(run_dir.glob(".*.tmp")), "no temporary file is left"
        assert not (run_dir / LOCK_NAME).exists(), "the lock is released"


def test_a_read_only_filesystem_is_one_line_exit_2_for_train_and_evaluate(tmp_path, capsys, uninterrupted):
    with small_filesystem(tmp_path / "ro", 1 << 20, read_only=True) as ro:
        assert main(["train", *TINY, "--checkpoint_path", str(ro / "run")]) == 2
        assert "Read-only file system" in capsys.readouterr().err
        code = main(["evaluate", "--checkpoint", str(uninterrupted / "last.pt"), "--data_path", data_root(),
                     "--no-tsne", "--no-clustering", "--out", str(ro / "report")])
        err = capsys.readouterr().err
        assert code == 2 and "Read-only file system" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_checkpoint_path_that_cannot_be_a_folder_is_one_line_exit_2(tmp_path, capsys, where):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" if where == "a file" else tmp_path / "file" / "run"
    assert main(["train", *TINY, "--checkpoint_path", str(target)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "file") in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "file").read_text() == "x"


# --- locks and run folders --------------------------------------------------------------------------------


def test_a_second_run_into_a_busy_folder_is_refused_and_the_first_is_untouched(tmp_path):
    run_dir = tmp_path / "run"
    with FolderLock(run_dir, log=lambda m: None), pytest.raises(UserError, match=f"in use by another run .*pid {os.getpid()}"):
        train(tiny_config(run_dir), log=lambda m: None)
    assert run_artefacts(run_dir) == []


def test_a_crashed_run_without_last_pt_is_still_in_use_and_overwrite_removes_every_stale_epoch(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, epochs=3), log=lambda m: None)
    (run_dir / "last.pt").unlink()  # what a crash before the first last.pt would leave, plus later epochs
    with pytest.raises(UserError, match=r"already holds a run .*epoch_3\.pt"):
        train(tiny_config(run_dir, epochs=1), log=lambda m: None)
    train(tiny_config(run_dir, epochs=1), overwrite=True, log=lambda m: None)
    expected = ["config.json", "epoch_1.pt", "last.pt", "losses.png", "metrics.jsonl"]
    assert sorted(p.name for p in run_artefacts(run_dir)) == expected


def test_resuming_from_an_older_epoch_refuses_to_cut_the_history_unless_told(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, epochs=3), log=lambda m: None)
    with pytest.raises(UserError, match="would discard its later epochs"):
        train(tiny_config(run_dir, epochs=3), resume=run_dir / "epoch_1.pt", log=lambda m: None)
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 3 and len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    train(tiny_config(run_dir, epochs=2), resume=run_dir / "epoch_1.pt", overwrite=True, log=lambda m: None)
    assert not (run_dir / "epoch_3.pt").exists() and load_checkpoint(run_dir / "last.pt")["epoch"] == 2


def test_resuming_into_a_folder_holding_another_run_is_refused(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(tiny_config(first, epochs=1), log=lambda m: None)
    train(tiny_config(second, epochs=1, seed=1), log=lambda m: None)
    with pytest.raises(UserError, match="holds another run"):
        train(tiny_config(second, epochs=2), resume=first / "last.pt", log=lambda m: None)


def test_a_refused_run_leaves_no_folder_behind(tmp_path):
    run_dir = tmp_path / "new"
    with pytest.raises(UserError):
        train(tiny_config(run_dir, num_images=100_000), log=lambda m: None)
    assert not run_dir.exists()


# --- checkpoints that are damaged or foreign ----------------------------------------------------------------


def _largest_tensor_span(path: Path) -> tuple[int, int]:
    """(offset, size) in the file of the largest stored tensor's raw bytes (torch stores them uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(fh.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_length + extra_length, info.file_size


def test_a_checkpoint_with_flipped_weight_bytes_is_refused_in_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, epochs=1), log=lambda m: None)
    path = run_dir / "last.pt"
    start, size = _largest_tensor_span(path)
    data = bytearray(path.read_bytes())
    middle = start + size // 2
    data[middle:middle + 4000] = bytes(b ^ 0xFF for b in data[middle:middle + 4000])
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged: its weights do not match the checksum"):
        load_checkpoint(damaged)
    assert main(["evaluate", "--checkpoint", str(damaged), "--data_path", data_root(), "--no-clustering"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_foreign_files_as_checkpoints_are_refused_in_our_own_words_without_torch_warnings(tmp_path, capsys):
    import pickle

    pickled = tmp_path / "object.pt"
    pickled.write_bytes(pickle.dumps({"model": object()}))
    text = tmp_path / "config.json"
    text.write_text("{}")
    for path in (pickled, text, tmp_path):
        assert main(["evaluate", "--checkpoint", str(path), "--no-clustering"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "weights_only" not in err and len(err) < 300, err
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--no-clustering"]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_checkpoint_saved_and_loaded_keeps_its_checksum(tmp_path):
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    save_checkpoint(tmp_path / "c.pt", {"epoch": 1, "config": {}, "model": weights})
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["model"]["w"], weights["w"])
    with pytest.raises(WriteError):
        save_checkpoint(tmp_path, {"epoch": 1, "config": {}, "model": weights})  # a folder is no file

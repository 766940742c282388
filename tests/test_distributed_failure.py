"""A training process that dies or hangs does not leave the others hanging, and the run resumes.

Two ``tripletnet train`` processes are started as torchrun would start them (RANK, WORLD_SIZE,
MASTER_ADDR/PORT in the environment; gloo on CPU) but without torchrun's agent, which would stop
the survivor itself: this checks tripletnet's own handling. Once the first epoch's checkpoint is
written, process 1 is killed with SIGKILL; process 0 must stop on its own with one clear line
(no traceback) that says how to resume, and resuming from that checkpoint in one process works.

A peer that is alive but silent (stopped, deadlocked) shows no closed connection: the collective
timeout ends the wait instead, with the same kind of message.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from _mnist import data_root, require_dataset

COLLECTIVE_TIMEOUT_SECONDS = 10  # a peer that hangs instead of dying is given up on after this
HANG_GUARD_SECONDS = 120  # far above what the survivor needs (a closed connection shows at once): only a hang reaches it


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _train_command(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "tripletnet", "train", "--data_path", data_root(), "--no-download",
        "--network", "reference", "--precision", "fp32", "--num_images", "128", "--batch_size", "64",
        "--num_val_triplets", "8", "--eval_every", "0", "--threads", "1", "--checkpoint_path", str(run_dir), *extra,
    ]


def _start_process(rank: int, port: int, run_dir: Path) -> subprocess.Popen[str]:
    env = dict(
        os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
        TRIPLETNET_COLLECTIVE_TIMEOUT=str(COLLECTIVE_TIMEOUT_SECONDS), OMP_NUM_THREADS="1",
    )
    # Many epochs: the run is still going whenever process 1 is killed.
    return subprocess.Popen(_train_command(run_dir, "--epochs", "1000"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_a_killed_process_stops_the_other_with_a_message_and_the_run_resumes(tmp_path: Path) -> None:
    require_dataset("mnist")
    run_dir = tmp_path / "run"
    port = _free_port()
    processes = [_start_process(rank, port, run_dir) for rank in range(2)]
    try:
        while not (run_dir / "last.pt").exists():
            assert all(p.poll() is None for p in processes), [p.communicate()[1] for p in processes if p.poll() is not None]
            time.sleep(0.1)
        processes[1].send_signal(signal.SIGKILL)
        try:
            _, stderr = processes[0].communicate(timeout=HANG_GUARD_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process 0 still runs {HANG_GUARD_SECONDS} s after process 1 was killed")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()

    assert processes[0].returncode == 1
    assert "Traceback" not in stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("tripletnet train: error: process 0 of 2 stopped: another training process died")
    assert f"--resume {run_dir / 'last.pt'}" in message

    saved = torch.load(run_dir / "last.pt", weights_only=True)["epoch"]
    resumed = subprocess.run(
        _train_command(run_dir, "--resume", str(run_dir / "last.pt"), "--epochs", str(saved + 1)),
        env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == saved + 1


SILENT_TIMEOUT_SECONDS = 2


def _silent_peer_process(rank: int, port: int, out: str) -> None:
    from tripletnet.training.distributed import (
        PeerProcessFailed,
        ProcessContext,
        all_gather_with_gradient,
        peer_failures_reported,
        start_process_group,
        stop_process_group,
    )

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      TRIPLETNET_COLLECTIVE_TIMEOUT=str(SILENT_TIMEOUT_SECONDS))
    context = ProcessContext(rank=rank, world_size=2, local_rank=rank)
    start_process_group(context, torch.device("cpu"))
    try:
        if rank == 1:  # joins, then never takes part in the collective: alive but silent
            time.sleep(3 * SILENT_TIMEOUT_SECONDS)
            return
        try:
            with peer_failures_reported(context, Path(out).parent):
                all_gather_with_gradient(torch.zeros(3))
        except PeerProcessFailed as error:
            Path(out).write_text(str(error))
    finally:
        stop_process_group(context)


def test_a_silent_process_is_given_up_on_after_the_collective_timeout(tmp_path: Path) -> None:
    out = tmp_path / "message.txt"
    mp.spawn(_silent_peer_process, args=(_free_port(), str(out)), nprocs=2, join=True)
    message = out.read_text()
    assert message.startswith(f"process 0 of 2 stopped: another training process died or did not answer within "
                              f"{SILENT_TIMEOUT_SECONDS} s")
    assert "Timed out" in message
    assert "no epoch was saved" in message  # no last.pt in the folder: nothing to resume from

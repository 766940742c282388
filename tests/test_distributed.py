"""Several processes: the global batch's shares, gathering, batch norm, and 2 gloo processes vs one.

The equivalence test spawns two CPU processes (gloo on a free localhost port) that train a tiny
run on a slice of MNIST and compares them with one process on the same global batches.
Tolerance: 1e-5 absolute on every weight (fp32; the two runs differ only in float rounding of
the batch-norm statistics, computed as sums over processes instead of in one pass).
"""

from __future__ import annotations

import dataclasses
import math
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tripletnet.augment import apply_affine, draw_affine, random_affine
from tripletnet.config import TrainConfig
from tripletnet.data import DatasetSplits
from tripletnet.errors import UserError
from tripletnet.training import load_checkpoint, train
from tripletnet.training.distributed import (
    DistributedBatchNorm,
    ProcessContext,
    collective_timeout,
    context_from_environment,
    shard_batch,
    use_distributed_batch_norm,
)

TOLERANCE = 1e-5


def test_environment_without_torchrun_is_one_process() -> None:
    assert context_from_environment({}) == ProcessContext(rank=0, world_size=1, local_rank=0)
    context = context_from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (context.rank, context.world_size, context.local_rank, context.is_main_process) == (3, 4, 1, False)


@pytest.mark.parametrize("environ", [{"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "0"}])
def test_inconsistent_torchrun_environment_is_a_user_error(environ: dict[str, str]) -> None:
    with pytest.raises(UserError):
        context_from_environment(environ)


def test_collective_timeout_reads_its_variable() -> None:
    assert collective_timeout({"TRIPLETNET_COLLECTIVE_TIMEOUT": "7.5"}).total_seconds() == 7.5
    with pytest.raises(UserError):
        collective_timeout({"TRIPLETNET_COLLECTIVE_TIMEOUT": "-1"})


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shares_split_every_class_and_gather_back_in_order(world: int) -> None:
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 7, 7, 7, 7])
    shards = [shard_batch(labels, ProcessContext(rank, world)) for rank in range(world)]
    positions = torch.cat([s.positions for s in shards])
    assert sorted(positions.tolist()) == list(range(len(labels)))  # disjoint and complete
    for shard in shards:
        for label in labels.unique():
            in_share = int((labels[shard.positions] == label).sum())
            assert abs(in_share - int((labels == label).sum()) / world) < 1  # each class's K split evenly
    # What gather_global_batch does, without processes: pad each share, concatenate, reorder.
    values = torch.arange(len(labels)) * 10
    padded = torch.cat([torch.cat([values[s.positions], values.new_full((s.share_size - len(s.positions),), -1)]) for s in shards])
    assert torch.equal(padded[shards[0].gathered_order], values)


def test_affine_drawn_then_applied_equals_random_affine() -> None:
    images = torch.rand(6, 1, 28, 28)
    expected = random_affine(images, torch.Generator().manual_seed(3))
    theta = draw_affine(6, 28, 28, torch.Generator().manual_seed(3))
    assert torch.equal(apply_affine(images, theta), expected)
    # A share's images warped by the share's rows of the global draw are the global result's rows.
    assert torch.equal(apply_affine(images[[1, 4]], theta[[1, 4]]), expected[[1, 4]])


def test_distributed_batch_norm_is_batch_norm_in_one_process() -> None:
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    reference = torch.nn.BatchNorm2d(3)
    use_distributed_batch_norm(model)
    assert isinstance(model[0], DistributedBatchNorm)
    assert model.state_dict().keys() == torch.nn.Sequential(reference).state_dict().keys()
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(model(x), reference(x))
    assert torch.equal(model[0].running_var, reference.running_var)


# --------------------------------------------------------------------------- two processes against one


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _process(rank: int, world: int, port: int, config: TrainConfig, data: DatasetSplits, root: str) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        TRIPLETNET_COLLECTIVE_TIMEOUT="60",
    )
    # Each process gets its own run folder, so a file written by a non-main process would show.
    train(dataclasses.replace(config, checkpoint_path=f"{root}/rank{rank}"), data=data, log=lambda _: None)


def _tiny_config(path: Path, epochs: int) -> TrainConfig:
    return TrainConfig(
        network="reference", num_images=256, batch_size=64, epochs=epochs, mining="semihard:0.5,batch_all",
        precision="fp32", num_val_triplets=32, eval_images=200, threads=1, lr_drop_epoch=0, seed=5,
        checkpoint_path=str(path), download=False,
    )


def _assert_records_equal(a: dict, b: dict) -> None:
    for key, value in a.items():
        if key in {"epoch_seconds", "images_per_second", "eval_seconds"}:
            continue
        if isinstance(value, float) and not math.isnan(value):
            assert b[key] == pytest.approx(value, abs=TOLERANCE), key
        else:
            assert b[key] == value or (isinstance(value, float) and math.isnan(b[key])), key


def test_two_processes_train_as_one_and_resume_in_one(tmp_path: Path, mnist_slice: DatasetSplits) -> None:
    port = _free_port()
    mp.spawn(_process, args=(2, port, _tiny_config(tmp_path, epochs=1), mnist_slice, str(tmp_path / "ddp")), nprocs=2, join=True)
    assert not (tmp_path / "ddp" / "rank1").exists()  # only the main process writes
    two = load_checkpoint(tmp_path / "ddp" / "rank0" / "last.pt")

    single = train(_tiny_config(tmp_path / "single", epochs=2), data=mnist_slice, log=lambda _: None)
    one = load_checkpoint(tmp_path / "single" / "epoch_1.pt")
    assert two["model"].keys() == one["model"].keys()
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key].float(), value.float(), rtol=0, atol=TOLERANCE, msg=key)
    _assert_records_equal(one["history"][0], two["history"][0])

    # 2 -> 1 processes: resume the two-process checkpoint in one process, same global batch.
    resumed = train(
        _tiny_config(tmp_path / "resumed", epochs=2), resume=tmp_path / "ddp" / "rank0" / "last.pt",
        data=mnist_slice, log=lambda _: None,
    )
    for (key, value), resumed_value in zip(single.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(resumed_value.float(), value.float(), rtol=0, atol=TOLERANCE, msg=key)
    _assert_records_equal(single.history[1], resumed.history[1])

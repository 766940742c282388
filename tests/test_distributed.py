"""Several processes: the global batch's shares, gathering, batch norm, and 2 gloo processes vs one.

The equivalence tests spawn two CPU processes (gloo on a free localhost port) and compare them
with one process on the same global batches:

* one step's gradient (SGD with lr 1, so the update is the gradient), in float64: equal within
  1e-9 of the largest gradient entry of each tensor. This is the exact claim (global-batch mining,
  loss scale 1, batch norm over processes); what remains is rounding, as reductions over a share
  and over the whole batch add in different orders. Not fp32: there that rounding depends on the
  CPU's kernels (measured: 4e-4 of the largest entry on an AVX2 CPU's first convolution, 2e-3 on an
  AVX-512 CPU's second, whose gradient goes through torch's CPU BatchNorm2d batch mean, itself off
  by ~2e-4 relative in fp32 on MNIST-like inputs), so no one fp32 bound holds on every machine.
* whole runs with Adam, in float64 (``precision="fp64"``, a real training option): every weight
  within 1e-9 and every per-epoch record (training statistics, validation loss, VAL, P@1, ...)
  within 1e-9 relative (measured: 4e-12 and 5e-14). Not fp32: Adam's first steps move every weight
  by about +-lr whatever the gradient's size, so an fp32 gradient entry within rounding of zero
  takes either sign depending on the summation order (measured: 95-99.8% of the weights within
  1e-5, the rest off by up to 2*lr per step); float64 rounding (~1e-16) stays far below Adam's eps.
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
    process_device,
    shard_batch,
    use_distributed_batch_norm,
)

WEIGHT_TOLERANCE = 1e-9  # float64 runs; measured 4e-12
RECORD_TOLERANCE = 1e-9  # relative, float64 runs; measured 5e-14
GRADIENT_TOLERANCE = 1e-9  # float64, of the largest entry
# cuDNN runs fp32 convolutions in TF32 (10-bit mantissa) unless told not to, as training does on a GPU;
# rounding each convolution's inputs to TF32 on the CPU moved these embeddings by up to 1.8e-4.
GPU_CPU_TOLERANCE = 1e-3


def test_environment_without_torchrun_is_one_process() -> None:
    assert context_from_environment({}) == ProcessContext(rank=0, world_size=1, local_rank=0)
    context = context_from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (context.rank, context.world_size, context.local_rank, context.is_main_process) == (3, 4, 1, False)


@pytest.mark.parametrize("environ", [{"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "0"}])
def test_inconsistent_torchrun_environment_is_a_user_error(environ: dict[str, str]) -> None:
    with pytest.raises(UserError):
        context_from_environment(environ)


def test_each_cuda_process_takes_its_own_gpu_and_one_without_a_gpu_is_a_user_error() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    second = ProcessContext(rank=3, world_size=4, local_rank=1)
    assert process_device(cuda, second, gpu_count=2) == torch.device("cuda", 1)
    assert process_device(cpu, second, gpu_count=0) == cpu
    assert process_device(cuda, ProcessContext(), gpu_count=0) == cuda  # one process: the device as asked
    with pytest.raises(UserError, match=r"LOCAL_RANK=1\) has no GPU of its own: this machine has 1 GPU.*--nproc_per_node 1"):
        process_device(cuda, second, gpu_count=1)


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
    padded = torch.cat([
        torch.cat([values[s.positions], values.new_full((s.share_size - len(s.positions),), -1)]) for s in shards
    ])
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


# --------------------------------------------------------------------------- host to device

NO_CUDA = "needs a CUDA device (this machine has none): pinned memory and non-blocking copies are CUDA-only"


def test_host_to_device_off_cuda_is_a_plain_move() -> None:
    from tripletnet.models import host_to_device

    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    moved = host_to_device(images, torch.device("cpu"))
    assert torch.equal(moved, images)
    assert not moved.is_pinned()  # pinning is for CUDA transfers only


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_host_to_device_copies_to_cuda_through_pinned_memory() -> None:
    from tripletnet.models import host_to_device

    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    moved = host_to_device(images, torch.device("cuda"))
    assert moved.device.type == "cuda"
    assert torch.equal(moved.cpu(), images)  # .cpu() waits for the non-blocking copy on the same stream
    pinned = images.pin_memory()
    assert torch.equal(host_to_device(pinned[10:20], torch.device("cuda")).cpu(), images[10:20])


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_embeddings_on_cuda_equal_those_on_cpu() -> None:
    from tripletnet.models import build_network, embed_images

    torch.manual_seed(0)
    model = build_network("reference", 64, (1, 28, 28))
    images = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8)
    on_cpu = embed_images(model, images, batch_size=128)
    on_cuda = embed_images(model.cuda(), images, batch_size=128)
    torch.testing.assert_close(on_cuda, on_cpu, rtol=0, atol=GPU_CPU_TOLERANCE)


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
    # One global batch of 64 per epoch: each epoch is one step.
    return TrainConfig(
        network="reference", num_images=64, batch_size=64, epochs=epochs, mining="semihard:0.5,batch_all",
        precision="fp64", num_val_triplets=32, eval_images=200, threads=1, lr_drop_epoch=0, seed=5,
        checkpoint_path=str(path), download=False,
    )


def _assert_weights_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=WEIGHT_TOLERANCE, msg=key)


def _assert_records_equal(a: dict, b: dict) -> None:
    for key, value in a.items():
        if key in {"epoch_seconds", "images_per_second", "eval_seconds"}:
            continue
        if isinstance(value, float) and not math.isnan(value):
            assert b[key] == pytest.approx(value, rel=RECORD_TOLERANCE, abs=RECORD_TOLERANCE), key
        else:
            assert b[key] == value or (isinstance(value, float) and math.isnan(b[key])), key


def _gradient_process(rank: int, port: int, data: DatasetSplits, out: str, options: dict) -> None:
    import os

    from torch.nn.parallel import DistributedDataParallel

    from tripletnet.training.distributed import start_process_group, stop_process_group
    from tripletnet.training.step import train_step

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    context = ProcessContext(rank=rank, world_size=2, local_rank=rank)
    start_process_group(context, torch.device("cpu"))
    try:
        model, images, labels, config, gen = _gradient_setup(data, options)
        use_distributed_batch_norm(model)
        trainer = DistributedDataParallel(model)
        train_step(trainer, torch.optim.SGD(model.parameters(), lr=1.0), images, labels, "semihard", config, gen,
                   shard=shard_batch(labels, context))
        if rank == 0:
            torch.save(model.state_dict(), out)
        torch.distributed.barrier()  # neither leaves the group while the other still uses it
    finally:
        stop_process_group(context)


def _gradient_setup(
    data: DatasetSplits, options: dict
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, TrainConfig, torch.Generator]:
    from tripletnet.models import build_network

    torch.set_num_threads(1)
    torch.manual_seed(2)
    model = build_network("reference", 64, (1, 28, 28)).double()
    indices = torch.arange(96)
    config = TrainConfig(precision="fp64", augment=True, download=False, **options)
    return model, data.train_images[indices], data.train_labels[indices], config, torch.Generator().manual_seed(9)


# Instance-level triplets with every augmentation: two views per image, each gathered on its own.
@pytest.mark.parametrize("options", [{}, {"instance_weight": 1.0, "elastic": 34.0, "stroke": 0.5, "hflip": 0.5}],
                         ids=["class-triplets", "instance-triplets"])
def test_two_processes_take_the_single_process_gradient(tmp_path: Path, mnist_slice: DatasetSplits, options: dict) -> None:
    from tripletnet.training.step import train_step

    out = tmp_path / "two.pt"
    mp.spawn(_gradient_process, args=(_free_port(), mnist_slice, str(out), options), nprocs=2, join=True)
    model, images, labels, config, gen = _gradient_setup(mnist_slice, options)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), images, labels, "semihard", config, gen)
    two = torch.load(out, weights_only=True)
    for name, _ in model.named_parameters():
        gradient_one = before[name] - model.state_dict()[name]
        gradient_two = before[name] - two[name]
        scale = float(gradient_one.abs().max())
        assert scale > 0, name
        torch.testing.assert_close(gradient_two, gradient_one, rtol=0, atol=GRADIENT_TOLERANCE * scale,
                                   msg=lambda detail, name=name, scale=scale: f"{name} (largest entry {scale:.3g}): {detail}")
    for name in ("trunk.1.running_mean", "trunk.1.running_var", "trunk.5.running_mean", "trunk.5.running_var"):
        torch.testing.assert_close(two[name], model.state_dict()[name], rtol=1e-3, atol=1e-4, msg=name)


def test_two_processes_train_as_one_and_resume_in_one(tmp_path: Path, mnist_slice: DatasetSplits) -> None:
    # Two epochs of one step each: semi-hard mining, then batch-all (the schedule of _tiny_config).
    mp.spawn(_process, args=(2, _free_port(), _tiny_config(tmp_path, epochs=2), mnist_slice, str(tmp_path / "ddp")),
             nprocs=2, join=True)
    assert not (tmp_path / "ddp" / "rank1").exists()  # only the main process writes
    two = load_checkpoint(tmp_path / "ddp" / "rank0" / "last.pt")

    single = train(_tiny_config(tmp_path / "single", epochs=2), data=mnist_slice, log=lambda _: None)
    _assert_weights_equal(two["model"], single.model.state_dict())
    assert len(two["history"]) == len(single.history) == 2
    for one_record, two_record in zip(single.history, two["history"], strict=True):
        _assert_records_equal(one_record, two_record)

    # 2 -> 1 processes: resume the two-process run's first epoch in one process, same global batch.
    resumed = train(
        _tiny_config(tmp_path / "resumed", epochs=2), resume=tmp_path / "ddp" / "rank0" / "epoch_1.pt",
        data=mnist_slice, log=lambda _: None,
    )
    _assert_weights_equal(resumed.model.state_dict(), single.model.state_dict())
    _assert_records_equal(single.history[1], resumed.history[1])

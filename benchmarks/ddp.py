"""Several processes on one machine: 1 process x 2 threads against 2 processes x 1 thread, same global batch.

    python -m benchmarks.ddp                      # defaults: conv3, global batch 256, 20 steps, mining at 4096
    python -m benchmarks.ddp --steps 5 --mining_batch 1024

Reports, for each layout, training images/s over ``--steps`` steps (after 2 warm-up steps) and,
for 2 processes, the share of a step spent in communication (the step's collectives timed alone:
the embedding gather, the batch-norm moments and the gradient all-reduce of the model's size),
then the time and peak memory per process of mining and the loss on a gathered global batch of
``--mining_batch`` random unit embeddings. Not a test: numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _setup(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from tripletnet.models import build_network

    torch.manual_seed(0)
    model = build_network(args.network, 64, (1, 28, 28)).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    labels = torch.arange(args.batch) % 10
    images = torch.randint(0, 256, (args.batch, 28, 28), dtype=torch.uint8)
    return model, images, labels


def _train_steps(rank: int, world: int, port: int, args: argparse.Namespace, results: dict) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from tripletnet.config import TrainConfig
    from tripletnet.training.distributed import (
        ProcessContext,
        gather_global_batch,
        shard_batch,
        start_process_group,
        stop_process_group,
        use_distributed_batch_norm,
    )
    from tripletnet.training.step import train_step

    torch.set_num_threads(2 // world)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    context = ProcessContext(rank=rank, world_size=world, local_rank=rank)
    start_process_group(context, torch.device("cpu"))
    model, images, labels = _setup(args)
    config = TrainConfig(network=args.network, batch_size=args.batch, download=False)
    gen = torch.Generator().manual_seed(1)
    trainer: torch.nn.Module = model
    shard = None
    if world > 1:
        use_distributed_batch_norm(model)
        trainer = DistributedDataParallel(model)
        shard = shard_batch(labels, context)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(args.steps + 2):
        if step == 2:
            started = time.perf_counter()
        train_step(trainer, optimizer, images, labels, "semihard", config, gen, shard=shard)
    seconds = time.perf_counter() - started
    communication = 0.0
    if shard is not None:
        # The step's collectives alone: the gather, one batch-norm gather per BN layer, the gradients.
        local = torch.zeros(len(shard.positions), 64, requires_grad=True)
        gradients = torch.zeros(sum(p.numel() for p in model.parameters()))
        bn_layers = sum(1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            gather_global_batch(local, shard).sum().backward()
            for _ in range(bn_layers):
                dist.all_gather([torch.zeros(129) for _ in range(world)], torch.zeros(129))
            dist.all_reduce(gradients)
        communication = (time.perf_counter() - t0) / seconds
    if rank == 0:
        results[world] = (args.steps * args.batch / seconds, communication)
    stop_process_group(context)


def _mining(rank: int, world: int, port: int, args: argparse.Namespace, results: dict) -> None:
    from tripletnet.training.distributed import (
        ProcessContext,
        gather_global_batch,
        shard_batch,
        start_process_group,
        stop_process_group,
    )
    from tripletnet.training.step import triplet_step

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    context = ProcessContext(rank=rank, world_size=world, local_rank=rank)
    start_process_group(context, torch.device("cpu"))
    labels = torch.arange(args.mining_batch) % max(2, args.mining_batch // 32)  # K = 32 images per class
    shard = shard_batch(labels, context)
    gen = torch.Generator().manual_seed(rank)
    local = torch.nn.functional.normalize(torch.randn(len(shard.positions), 64, generator=gen), dim=1).requires_grad_()
    started = time.perf_counter()
    for miner in ("semihard", "hard", "batch_all"):
        loss, _ = triplet_step(gather_global_batch(local, shard), labels, miner, 1.0)
        loss.backward()
    seconds = (time.perf_counter() - started) / 3
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results[f"mining{rank}"] = (seconds, peak_mib)
    stop_process_group(context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="conv3")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--mining_batch", type=int, default=4096)
    args = parser.parse_args()
    with mp.Manager() as manager:
        results = manager.dict()
        for world in (1, 2):
            mp.spawn(_train_steps, args=(world, _free_port(), args, results), nprocs=world, join=True)
        mp.spawn(_mining, args=(2, _free_port(), args, results), nprocs=2, join=True)
        print(f"{args.network}, global batch {args.batch}, {args.steps} steps, {os.cpu_count()} CPUs")
        for world in (1, 2):
            images_per_second, communication = results[world]
            layout = "1 process x 2 threads " if world == 1 else "2 processes x 1 thread"
            share = f", communication {communication:.0%} of a step" if world > 1 else ""
            print(f"{layout}: {images_per_second:8.1f} images/s{share}")
        for rank in range(2):
            seconds, peak = results[f"mining{rank}"]
            print(f"mining at global batch {args.mining_batch}, process {rank}: {seconds:.2f} s per miner "
                  f"(semihard, hard, batch_all mean), peak memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()

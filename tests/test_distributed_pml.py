"""Two gloo processes: our batch-all step against pytorch-metric-learning's distributed wrappers.

On batch-all the definitions coincide: PML's ``TripletMarginMiner("all")`` + ``TripletMarginLoss``
(Euclidean distance, AvgNonZeroReducer: the mean over triplets with positive loss) is our
``batch_all`` miner and loss. PML's ``DistributedMinerWrapper`` and ``DistributedLossWrapper``
gather the embeddings of every process (its own with gradient) and return ``world_size`` times the
loss of the global batch, so that DDP's averaging gives the single-process gradient, as ours does;
the test compares PML's loss divided by ``world_size``. PML's gather needs equal-sized shares, so
the global batch is 8 classes x 8 images. Both sides get the same network, global batches and
shares (our DistributedBatchNorm in both) and run three Adam steps in float64; the per-step losses
and the final weights must agree within 1e-9 (float64 rounding; measured: 1e-16 on the losses,
2e-14 on the weights).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tripletnet.data import DatasetSplits

pytest.importorskip("pytorch_metric_learning")

STEPS = 3
TOLERANCE = 1e-9  # float64; measured 1e-16 (losses), 2e-14 (weights)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _trainer(context: object) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    from torch.nn.parallel import DistributedDataParallel

    from tripletnet.models import build_network
    from tripletnet.training.distributed import use_distributed_batch_norm

    torch.manual_seed(4)
    model = use_distributed_batch_norm(build_network("reference", 64, (1, 28, 28)).double())
    return model, DistributedDataParallel(model), torch.optim.Adam(model.parameters(), lr=1e-3)


def _process(rank: int, port: int, data: DatasetSplits, out: str) -> None:
    import os

    from pytorch_metric_learning import losses, miners
    from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper

    from tripletnet.config import TrainConfig
    from tripletnet.models import images_to_input
    from tripletnet.training.distributed import ProcessContext, shard_batch, start_process_group, stop_process_group
    from tripletnet.training.step import train_step

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    context = ProcessContext(rank=rank, world_size=2, local_rank=rank)
    start_process_group(context, torch.device("cpu"))
    try:
        config = TrainConfig(augment=False, download=False)
        ours, our_trainer, our_optimizer = _trainer(context)
        peer, peer_trainer, peer_optimizer = _trainer(context)
        miner = DistributedMinerWrapper(miners.TripletMarginMiner(margin=config.margin, type_of_triplets="all"))
        loss_function = DistributedLossWrapper(losses.TripletMarginLoss(margin=config.margin))
        our_losses, peer_losses = [], []
        gen = torch.Generator().manual_seed(0)
        by_class = [torch.nonzero(data.train_labels == c).flatten() for c in range(8)]
        for step in range(STEPS):
            # 8 classes x 8 images: PML gathers equal-sized shares only (ours pads), so K is even.
            batch = torch.cat([indices[step * 8 : (step + 1) * 8] for indices in by_class])
            images, labels = data.train_images[batch], data.train_labels[batch].to(torch.int64)
            shard = shard_batch(labels, context)
            our_losses.append(train_step(our_trainer, our_optimizer, images, labels, "batch_all", config, gen, shard=shard).loss)

            share_labels = labels[shard.positions]
            embeddings = peer_trainer(images_to_input(images[shard.positions], torch.float64))
            loss = loss_function(embeddings, share_labels, miner(embeddings, share_labels))
            peer_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            peer_optimizer.step()
            peer_losses.append(float(loss) / context.world_size)
        if rank == 0:
            torch.save({"ours": our_losses, "peer": peer_losses, "our_model": ours.state_dict(),
                        "peer_model": peer.state_dict()}, out)
    finally:
        stop_process_group(context)


def test_batch_all_loss_per_step_agrees_with_pytorch_metric_learning_distributed(
    tmp_path: Path, mnist_slice: DatasetSplits
) -> None:
    out = tmp_path / "losses.pt"
    mp.spawn(_process, args=(_free_port(), mnist_slice, str(out)), nprocs=2, join=True)
    result = torch.load(out, weights_only=True)
    assert len(result["ours"]) == STEPS
    assert all(loss > 0 for loss in result["ours"])
    assert result["peer"] == pytest.approx(result["ours"], rel=TOLERANCE, abs=TOLERANCE)
    for key, value in result["our_model"].items():
        torch.testing.assert_close(result["peer_model"][key], value, rtol=0, atol=TOLERANCE, msg=key)

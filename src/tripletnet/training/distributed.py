"""Several processes (torchrun): the process group, the global batch's shares, gathering, batch norm.

Under ``torchrun`` every process trains on a disjoint share of ONE global P x K batch (the batch a
single process would draw with the same seed), gathers every process's embeddings with gradients,
and mines and computes the loss on the whole global batch. Every process therefore computes the
same loss ``L``. Why no loss scaling is needed (factor 1):

* the backward of the autograd-aware ``all_gather`` sums, over the processes, the gradient each
  of them sends to a gathered slot; all of them hold the same ``L``, so a process's own share
  receives ``world * dL/de``;
* :class:`DistributedBatchNorm` gathers every process's batch moments with the same all_gather, so
  a process's moments also receive ``world * dL/dm`` (the sum over processes of identical terms);
* DistributedDataParallel then averages the parameter gradients (divides their sum by ``world``),
  which leaves ``sum over shares of dL/dtheta``, the single-process gradient.

With one process (no torchrun) nothing here is used: training takes exactly the single-process
code path.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError

DEFAULT_TIMEOUT_SECONDS = 600.0
"""How long a collective waits for the other processes before this process gives up (10 minutes;
``TRIPLETNET_COLLECTIVE_TIMEOUT`` in seconds overrides it). A dead peer usually surfaces sooner,
as a closed connection, and torchrun's agent stops the other processes when one fails."""

TIMEOUT_VARIABLE = "TRIPLETNET_COLLECTIVE_TIMEOUT"


@dataclass(frozen=True)
class ProcessContext:
    """Where this process stands among the training processes.

    Attributes:
        rank: this process's index among all processes (0 is the main process).
        world_size: how many processes train together (1 without torchrun).
        local_rank: this process's index on its machine (picks its GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main_process(self) -> bool:
        """Only the main process writes files (checkpoints, metrics, plots) and logs."""
        return self.rank == 0


def context_from_environment(environ: Mapping[str, str] | None = None) -> ProcessContext:
    """The process context torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK; one process otherwise.

    Raises:
        UserError: when the variables are not integers or are inconsistent.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return ProcessContext()
    try:
        world = int(environ["WORLD_SIZE"])
        rank = int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise UserError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}")
    return ProcessContext(rank=rank, world_size=world, local_rank=local_rank)


def collective_timeout(environ: Mapping[str, str] | None = None) -> datetime.timedelta:
    """The collective timeout: ``TRIPLETNET_COLLECTIVE_TIMEOUT`` seconds, else :data:`DEFAULT_TIMEOUT_SECONDS`."""
    environ = os.environ if environ is None else environ
    text = environ.get(TIMEOUT_VARIABLE, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        raise UserError(f"{TIMEOUT_VARIABLE} must be a number of seconds, got {text!r}") from None
    if seconds <= 0:
        raise UserError(f"{TIMEOUT_VARIABLE} must be positive, got {text!r}")
    return datetime.timedelta(seconds=seconds)


def process_device(device: torch.device, context: ProcessContext, gpu_count: int | None = None) -> torch.device:
    """A process's device: its own GPU (by local rank) when training on CUDA, else ``device``.

    Args:
        device: the device the run asked for.
        context: this process's ranks.
        gpu_count: the GPUs this machine has (default: what CUDA reports).

    Raises:
        UserError: when torchrun started more processes on this machine than it has GPUs (each
            process trains on its own GPU; NCCL refuses two processes on one).
    """
    if device.type == "cuda" and context.is_distributed:
        gpu_count = torch.cuda.device_count() if gpu_count is None else gpu_count
        if context.local_rank >= gpu_count:
            raise UserError(
                f"process {context.rank} (LOCAL_RANK={context.local_rank}) has no GPU of its own: this machine has "
                f"{gpu_count} GPU(s) and each CUDA training process needs one; start at most {gpu_count} per machine "
                f"(torchrun --nproc_per_node {max(gpu_count, 1)}) or train on the CPU with --device cpu"
            )
        return torch.device("cuda", context.local_rank)
    return device


def start_process_group(context: ProcessContext, device: torch.device) -> None:
    """Join the other processes (NCCL on CUDA, gloo otherwise) unless already joined or alone.

    The rendezvous address comes from torchrun's MASTER_ADDR/MASTER_PORT (``env://``).
    """
    if not context.is_distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        rank=context.rank,
        world_size=context.world_size,
        timeout=collective_timeout(),
        # NCCL binds its communicator to this process's GPU at once (and barriers know their device)
        device_id=device if device.type == "cuda" else None,
    )


class PeerProcessFailed(UserError):
    """Another training process died or stopped answering: this one stops too, instead of hanging."""

    exit_code = 1  # not a mistake in the command line, but a run that failed


def _is_collective_failure(error: BaseException) -> bool:
    # gloo reports a closed connection or a timed-out collective as a plain RuntimeError naming
    # itself; NCCL and the rendezvous store raise torch.distributed's DistError subclasses.
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and ("gloo" in str(error) or "NCCL" in str(error))


@contextlib.contextmanager
def peer_failures_reported(context: ProcessContext, run_dir: Path) -> Iterator[None]:
    """Turn a failed collective (a dead or silent peer) into one clear :class:`PeerProcessFailed` line.

    A process whose peer died sees a closed connection at its next collective, at once; one whose
    peer hangs gives up after the collective timeout (:func:`collective_timeout`). Either way the
    message says how to resume from the run folder's last checkpoint.

    Args:
        context: this process's rank and the world size (nothing is caught for one process).
        run_dir: the run folder, whose ``last.pt`` the message points to.
    """
    if not context.is_distributed:
        yield
        return
    try:
        yield
    except Exception as error:
        if not _is_collective_failure(error):
            raise
        last = run_dir / "last.pt"
        resume = f"resume with --resume {last}" if last.exists() else f"no epoch was saved in {run_dir}; start the run again"
        cause = str(error).split(". ")[0].split("] ", 1)[-1]  # gloo's text after its source location, first sentence
        raise PeerProcessFailed(
            f"process {context.rank} of {context.world_size} stopped: another training process died or did not answer "
            f"within {collective_timeout().total_seconds():g} s ({TIMEOUT_VARIABLE}) - {cause}; {resume}"
        ) from None


def stop_process_group(context: ProcessContext) -> None:
    """Leave the process group this module started (a no-op for one process)."""
    if context.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- the global batch's shares


@dataclass(frozen=True)
class BatchShard:
    """This process's share of a global batch, and how to put the gathered shares back in order.

    Attributes:
        positions: positions in the global batch this process embeds (int64, ascending).
        share_size: the largest share over all processes (shares are padded to it for all_gather).
        gathered_order: for each global-batch position, its row in the padded, gathered shares.
    """

    positions: torch.Tensor
    share_size: int
    gathered_order: torch.Tensor


def shard_batch(labels: torch.Tensor, context: ProcessContext) -> BatchShard:
    """Split a global batch so that each class's images are dealt round-robin to the processes.

    The i-th image of a class in the batch goes to process ``i % world_size``: every process sees
    every class of the batch (when K >= world_size) and the shares differ in size by at most one
    image per class.

    Args:
        labels: (B,) labels of the global batch, the same on every process.
        context: this process's rank and the world size.

    Returns:
        This process's :class:`BatchShard`.
    """
    labels = labels.to("cpu", torch.int64)
    world = context.world_size
    # Within-class ordinal of each position: how many earlier positions have its label.
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels)  # first position of each label's run
    ordinal = torch.empty_like(labels)
    ordinal[order] = torch.arange(len(labels)) - starts
    owner = ordinal % world
    shares = [torch.nonzero(owner == r).flatten() for r in range(world)]
    share_size = max(len(s) for s in shares)
    gathered_order = torch.empty_like(labels)
    for r, share in enumerate(shares):
        gathered_order[share] = r * share_size + torch.arange(len(share))
    return BatchShard(positions=shares[context.rank], share_size=share_size, gathered_order=gathered_order)


class _AllGatherWithGradient(torch.autograd.Function):
    # torch.distributed.nn.functional.all_gather does the same but warns (deprecated) in every run.

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor) -> torch.Tensor:  # noqa: ARG004 - autograd's signature
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> torch.Tensor:  # noqa: ARG004 - autograd's signature
        # Every process's gradient of every gathered row, summed; this process keeps its own row's.
        gradient = gradient.contiguous()
        dist.all_reduce(gradient)
        return gradient[dist.get_rank()]


def all_gather_with_gradient(local: torch.Tensor) -> torch.Tensor:
    """Every process's ``local`` stacked in rank order, (world, *local.shape); the backward sends each
    process the sum over all processes of the gradient of its own slot.

    Args:
        local: this process's tensor (the same shape on every process).

    Returns:
        The stacked tensors of all processes.
    """
    return typing.cast(torch.Tensor, _AllGatherWithGradient.apply(local))


def gather_global_batch(local: torch.Tensor, shard: BatchShard) -> torch.Tensor:
    """Every process's share of a per-image tensor, in global-batch order, with gradients.

    Args:
        local: (n, ...) rows for ``shard.positions`` (n <= ``shard.share_size``).
        shard: this process's :class:`BatchShard`.

    Returns:
        (B, ...) rows of the whole global batch; the backward sends each process its rows' gradient.
    """
    padding = shard.share_size - len(local)
    if padding:
        local = torch.cat([local, local.new_zeros((padding, *local.shape[1:]))])
    gathered = all_gather_with_gradient(local).flatten(0, 1)
    return gathered[shard.gathered_order.to(gathered.device)]


# --------------------------------------------------------------------------- batch norm over all processes


class DistributedBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, on any device.

    torch's SyncBatchNorm runs on GPUs only; this one combines every process's per-channel count,
    mean and centred sum of squares (gathered with autograd), on CPU too. Its parameters and
    buffers are nn.BatchNorm2d's, so checkpoints stay interchangeable. Outside a process group,
    or in eval mode, it is exactly nn.BatchNorm2d.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.BatchNorm2d's name
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        values = input.to(torch.promote_types(input.dtype, torch.float32))  # bf16 -> fp32; fp64 stays
        mean, var, n = _global_channel_moments(values)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            assert self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        shape = (1, -1, 1, 1)
        out = (values - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def _global_channel_moments(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of (N, C, H, W) ``values`` over all processes, and the count.

    Each process sends its count, means and centred sums of squares; they are combined with Chan's
    parallel formula. Sums of x and x^2 would lose the variance to cancellation when the mean is
    large against the spread (a first convolution over mostly-background images).
    """
    dims = (0, 2, 3)
    local_mean = values.mean(dims)
    centred = values - local_mean.view(1, -1, 1, 1)
    local_m2 = (centred * centred).sum(dims)
    count = values.new_full((1,), values.numel() / values.shape[1])
    parts = all_gather_with_gradient(torch.cat([count, local_mean, local_m2]))  # (world, 1 + 2C)
    channels = values.shape[1]
    counts, means, m2s = parts[:, :1], parts[:, 1 : 1 + channels], parts[:, 1 + channels :]
    n = counts.sum()
    mean = (counts * means).sum(0) / n
    m2 = (m2s + counts * (means - mean) ** 2).sum(0)
    return mean, m2 / n, n


def use_distributed_batch_norm(model: nn.Module) -> nn.Module:
    """Turn every nn.BatchNorm2d of ``model`` into a :class:`DistributedBatchNorm` in place, same tensors."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = DistributedBatchNorm
    return model

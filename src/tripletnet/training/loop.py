"""The training loop, readable top to bottom: prepare the run, one epoch, the epoch's record, save.

``train(config)`` is what ``tripletnet train`` runs; a notebook can call it the same way.
Every epoch appends one record to ``<checkpoint_path>/metrics.jsonl`` and writes
``epoch_<n>.pt`` and ``last.pt``; the run's config is saved as ``config.json`` first.
Training draws randomness only from generators seeded by the config (weights, subset, batches,
augmentation, validation triplets), never from torch's global RNG, so a run replays exactly and a
resumed run needs no RNG state.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Device, TrainConfig
from ..console import Logger, log_stderr, progress
from ..data import DatasetSplits, load_dataset, stratified_subset
from ..errors import ParameterError, UserError
from ..fileio import atomic_write_text
from ..mining import ScheduleEntry, get_miner, miner_for_epoch, parse_schedule
from ..models import EmbeddingNet, build_network, embed_images, input_shape_of
from ..sampler import ClassBalancedBatchSampler
from .checkpoint import load_checkpoint, save_checkpoint
from .collapse import FALLBACK_MINER, CollapseGuard, is_collapsed
from .distributed import (
    ProcessContext,
    context_from_environment,
    process_device,
    shard_batch,
    start_process_group,
    stop_process_group,
    use_distributed_batch_norm,
)
from .runlog import RunLog
from .step import StepStats, train_step
from .validation import draw_validation_triplets, validation_loss

DEVICES = typing.get_args(Device)


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model, its config, the per-epoch records and the run folder."""

    model: EmbeddingNet
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path = Path(".")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``/``cuda``/``mps`` as asked, if present.

    Raises:
        ParameterError: for an unknown name or a device this machine does not have.
    """
    if name not in DEVICES:
        raise ParameterError("device", f"must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[name]:
        raise ParameterError("device", f"is {name!r}, but this machine has no {name} device (use auto or cpu)")
    return torch.device(name)


@dataclass
class Run:
    """Everything a run settles before its first epoch, and its state between epochs."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    data: DatasetSplits
    train_images: torch.Tensor  # uint8, on the device
    train_labels: torch.Tensor
    sampler: ClassBalancedBatchSampler
    val_triplets: torch.Tensor
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    model: EmbeddingNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    schedule: tuple[ScheduleEntry, ...]
    runlog: RunLog
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 1
    fallback_epoch: int | None = None  # the epoch a collapsing miner was replaced from
    is_main_process: bool = True  # only the main process writes files
    context: ProcessContext = field(default_factory=ProcessContext)  # rank and world size (torchrun)
    trainer: torch.nn.Module | None = None  # the DistributedDataParallel wrapper of ``model`` when several processes train


def train(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    data: DatasetSplits | None = None,
    log: Logger = log_stderr,
) -> TrainResult:
    """Train an embedding network as ``config`` says; resume from a checkpoint if given.

    Args:
        config: every hyperparameter of the run (its ``checkpoint_path`` is the run folder).
        resume: a checkpoint to continue from (its epoch, weights, optimiser and history).
        overwrite: replace a run already in the run folder instead of refusing.
        data: an already loaded dataset to reuse (tests, notebooks); default: load ``config.dataset``.
        log: where progress messages go.

    Returns:
        The trained model, the config, the per-epoch records and the run folder.
    """
    context = context_from_environment()
    if not context.is_main_process:
        log = _quiet  # only the main process logs (every process computes the same records)
    run = prepare_run(config, resume=resume, overwrite=overwrite, data=data, log=log, context=context)
    try:
        return _train_epochs(run, log)
    finally:
        stop_process_group(run.context)


def _quiet(message: str) -> None:
    del message


def _train_epochs(run: Run, log: Logger) -> TrainResult:
    config = run.config
    for epoch in range(run.start_epoch, config.epochs + 1):
        miner, means, seconds, lr = run_epoch(run, epoch, log)
        record = epoch_record(run, epoch, miner, lr, means, seconds)
        save_epoch(run, epoch, record)
        log(_format_record(record, config.epochs))
        if record["collapsed"]:
            log(
                f"WARNING: epoch {epoch}: the embeddings have COLLAPSED (spread {record['embedding_spread']:.2e}, "
                f"loss {record['train_loss']:.4f} ~ margin {config.margin}): every image maps to nearly the same point. "
                "Hard mining from the start often does this; try a longer semi-hard phase (--mining semihard:0.6,hard), "
                "a lower --lr, or batch_all mining."
            )
    if run.is_main_process:
        _plot_losses(run.history, run.run_dir, log)
    return TrainResult(model=run.model, config=config, history=run.history, run_dir=run.run_dir)


# --------------------------------------------------------------------------- 1. prepare the run


def prepare_run(
    config: TrainConfig, *, resume: str | Path | None, overwrite: bool, data: DatasetSplits | None, log: Logger,
    context: ProcessContext | None = None,
) -> Run:
    """Config and run folder (nothing written on a user mistake), data, model, optimiser, resume.

    Under torchrun (``context`` of several processes) it also joins the process group; every
    process resumes from the same checkpoint.
    """
    context = context or ProcessContext()
    checkpoint = load_checkpoint(resume) if resume else None
    config.validate()
    device = process_device(resolve_device(config.device), context)
    run_dir = Path(config.checkpoint_path)
    if checkpoint is None and (run_dir / "last.pt").exists() and not overwrite:
        raise UserError(
            f"{run_dir} already holds a run (last.pt): continue it with --resume {run_dir / 'last.pt'}, "
            "choose another --checkpoint_path, or pass --overwrite"
        )
    if config.threads:
        torch.set_num_threads(config.threads)

    # Data: in-memory uint8 tensors, a stratified subset, fixed validation triplets and evaluation subset.
    if data is None:
        data = load_dataset(config.dataset, config.data_path, download=config.download)
    if config.num_images < config.batch_size:
        raise UserError(f"--num_images ({config.num_images}) must be at least --batch_size ({config.batch_size})")
    subset = stratified_subset(data.train_labels, config.num_images, config.seed)
    train_images, train_labels = data.train_images[subset], data.train_labels[subset]
    sampler = ClassBalancedBatchSampler(train_labels, config.batch_size, config.num_images // config.batch_size, config.seed)
    val_triplets = draw_validation_triplets(data.test_labels, config.num_val_triplets, config.seed)
    n_eval = len(data.test_labels) if config.eval_images == 0 else min(config.eval_images, len(data.test_labels))
    eval_subset = stratified_subset(data.test_labels, n_eval, config.seed)

    # Model and optimiser: the initial weights come from the seed alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_network(config.network, config.embedding_dim, input_shape_of(train_images))
    # NHWC convolutions are ~15% faster on CPU here (oneDNN's preferred layout).
    model = model.to(memory_format=torch.channels_last).to(device)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _epoch_lr_lambda(config))
    run = Run(
        config=config, run_dir=run_dir, device=device, data=data,
        train_images=train_images.to(device), train_labels=train_labels.to(device), sampler=sampler,
        val_triplets=val_triplets, eval_images=data.test_images[eval_subset], eval_labels=data.test_labels[eval_subset],
        model=model, optimizer=optimizer, scheduler=scheduler, schedule=parse_schedule(config.mining),
        runlog=RunLog(run_dir), is_main_process=context.is_main_process, context=context,
    )
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        run.history = list(checkpoint.get("history", []))
        run.start_epoch = int(checkpoint["epoch"]) + 1
        run.fallback_epoch = checkpoint.get("mining_fallback_epoch")
    if context.is_distributed:
        start_process_group(context, device)
        # Batch statistics of the global batch, as one process would compute them.
        use_distributed_batch_norm(model)
        run.trainer = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    if run.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", config.to_json() + "\n")
        run.runlog.start(run.history)
    log(
        f"training {config.network} on {data.name} ({device.type}): {config.num_images} images/epoch, "
        f"{len(sampler)} batches of {config.batch_size}, epochs {run.start_epoch}..{config.epochs}, run folder {run_dir}"
    )
    return run


def _epoch_lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    # LambdaLR counts finished epochs: factor applies from epoch lr_drop_epoch + 1 on.
    drop = config.lr_drop_epoch

    def factor(finished_epochs: int) -> float:
        return config.lr_drop_factor if drop and finished_epochs >= drop else 1.0

    return factor


# --------------------------------------------------------------------------- 2. one epoch

STAT_KEYS = ("loss", "active_fraction", "mean_pos_dist", "mean_neg_dist", "embedding_spread")


def run_epoch(run: Run, epoch: int, log: Logger) -> tuple[str, dict[str, float], float, float]:
    """Train one epoch with the schedule's miner, guarded when that miner can collapse.

    A miner that can collapse the embeddings (hard mining can, within an epoch, on Fashion-MNIST)
    runs under a :class:`CollapseGuard` when ``collapse_fallback`` is on: a collapsing epoch is
    undone and rerun with semi-hard mining, which the run then keeps.

    Returns:
        The miner used, the epoch's mean step statistics, its seconds and its learning rate.
    """
    config = run.config
    miner = miner_for_epoch(run.schedule, epoch, config.epochs)
    if run.fallback_epoch is not None and get_miner(miner).can_collapse:
        miner = FALLBACK_MINER
    lr = run.optimizer.param_groups[0]["lr"]
    guard = None
    if config.collapse_fallback and get_miner(miner).can_collapse and run.history:
        guard = CollapseGuard(run.model, run.optimizer, run.history[-1]["embedding_spread"])
    started = time.perf_counter()
    totals = _train_batches(run, epoch, miner, guard)
    if totals is None:  # collapsing: undo the epoch, continue with the fallback miner
        assert guard is not None
        guard.undo()
        run.fallback_epoch, miner = epoch, FALLBACK_MINER
        log(
            f"WARNING: epoch {epoch}: {miner_for_epoch(run.schedule, epoch, config.epochs)} mining was COLLAPSING the "
            f"embeddings (batch spread fell below {guard.min_spread:.3f}, half of the last epoch's); the epoch was undone "
            f"and training continues with {FALLBACK_MINER} mining (--no-collapse_fallback keeps the schedule)"
        )
        totals = _train_batches(run, epoch, miner, None)
        assert totals is not None
    seconds = time.perf_counter() - started
    run.scheduler.step()
    steps = len(run.sampler)
    return miner, {key: value / steps for key, value in totals.items()}, seconds, lr


def _train_batches(run: Run, epoch: int, miner: str, guard: CollapseGuard | None) -> dict[str, float] | None:
    """One pass over the epoch's batches: sums of the step statistics, or None when ``guard`` trips."""
    gen = run.sampler.epoch_generator(epoch)  # drives augmentation too: an epoch replays exactly
    run.model.train()
    totals = dict.fromkeys(STAT_KEYS, 0.0)
    batches = run.sampler.batches(epoch)
    for indices in progress(batches, total=len(batches), desc=f"epoch {epoch}/{run.config.epochs} [{miner}]"):
        labels = run.train_labels[indices]
        if run.trainer is None:
            stats = train_step(run.model, run.optimizer, run.train_images[indices], labels, miner, run.config, gen)
        else:
            stats = train_step(run.trainer, run.optimizer, run.train_images[indices], labels, miner, run.config, gen,
                               shard=shard_batch(labels, run.context))
        if guard is not None and guard.trips(stats):
            return None  # the guard restores the epoch's starting weights, so this step's update is undone too
        for key in totals:
            totals[key] += getattr(stats, key)
    return totals


# --------------------------------------------------------------------------- 3. the epoch's record


def epoch_record(run: Run, epoch: int, miner: str, lr: float, means: dict[str, float], seconds: float) -> dict[str, Any]:
    """The metrics.jsonl record of an epoch: its step means, validation loss, evaluation and collapse verdict."""
    config = run.config
    record: dict[str, Any] = {
        "epoch": epoch,
        "miner": miner,
        "mining_fallback": run.fallback_epoch is not None,
        "lr": lr,
        "train_loss": means["loss"],
        "active_fraction": means["active_fraction"],
        "mean_pos_dist": means["mean_pos_dist"],
        "mean_neg_dist": means["mean_neg_dist"],
        "embedding_spread": means["embedding_spread"],
        "val_loss": validation_loss(run.model, run.data.test_images, run.val_triplets, config.margin),
        "epoch_seconds": seconds,
        "images_per_second": len(run.sampler) * config.batch_size / seconds,
    }
    if config.eval_every and (epoch % config.eval_every == 0 or epoch == config.epochs):
        from ..evaluation import fast_epoch_metrics

        eval_started = time.perf_counter()
        metrics = fast_epoch_metrics(embed_images(run.model, run.eval_images), run.eval_labels, far=1e-3)
        record.update(metrics.to_dict())
        record["eval_seconds"] = time.perf_counter() - eval_started
        record["eval_images"] = len(run.eval_labels)
    epoch_stats = StepStats(
        loss=means["loss"], active_fraction=means["active_fraction"], mean_pos_dist=means["mean_pos_dist"],
        mean_neg_dist=means["mean_neg_dist"], num_triplets=0, embedding_spread=means["embedding_spread"],
    )
    record["collapsed"] = bool(is_collapsed(epoch_stats, config.margin))
    return record


# --------------------------------------------------------------------------- 4. save


def save_epoch(run: Run, epoch: int, record: dict[str, Any]) -> None:
    """Add the record to the history and metrics.jsonl; write epoch_<n>.pt and last.pt."""
    run.history.append(record)
    if not run.is_main_process:
        return
    run.runlog.append(record)
    state = {
        "epoch": epoch,
        "config": run.config.to_dict(),
        "input_shape": list(run.model.input_shape),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "history": run.history,
        **({"mining_fallback_epoch": run.fallback_epoch} if run.fallback_epoch is not None else {}),
    }
    save_checkpoint(run.run_dir / f"epoch_{epoch}.pt", state)
    save_checkpoint(run.run_dir / "last.pt", state)


def _format_record(record: dict[str, Any], epochs: int) -> str:
    parts = [
        f"epoch {record['epoch']:>3}/{epochs}",
        f"{record['miner']:<9}",
        f"lr {record['lr']:.0e}",
        f"loss {record['train_loss']:.4f}",
        f"val_loss {record['val_loss']:.4f}",
        f"active {record['active_fraction']:.2f}",
        f"d+ {record['mean_pos_dist']:.3f} d- {record['mean_neg_dist']:.3f}",
    ]
    if "val" in record:
        parts.append(f"VAL@1e-3 {record['val']:.4f} P@1 {record['precision_at_1']:.4f}")
    parts.append(f"{record['images_per_second']:.0f} img/s")
    return " | ".join(parts)


def _plot_losses(history: list[dict[str, Any]], run_dir: Path, log: Logger) -> None:
    if not history:
        return
    from ..plots import plot_losses

    path = plot_losses(history, run_dir / "losses.png")
    log(f"losses plot: {path}")

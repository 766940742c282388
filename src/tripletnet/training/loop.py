"""The training loop, readable top to bottom: prepare the run, one epoch, the epoch's record, save.

``train(config)`` is what ``tripletnet train`` runs; a notebook can call it the same way.
Every epoch writes ``last.pt`` and ``epoch_<n>.pt`` (and ``best.pt`` when it is the best) and then
appends one record to ``<checkpoint_path>/metrics.jsonl``; the run's config is saved as ``config.json``
first. ``last.pt`` is written first, so that it always names the newest complete epoch: a kill at
any moment leaves a folder that ``--resume last.pt`` continues (the resume writes what the kill cut
short), and Ctrl-C or SIGTERM during a save take effect once the save is complete.
Training draws randomness only from generators seeded by the config (weights, subset, batches,
augmentation, validation triplets), never from torch's global RNG, so a run replays exactly on a
CPU and a resumed run needs no RNG state (on a GPU, cuDNN's backward and atomic adds are not
deterministic: runs agree to rounding, not bit for bit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..allocator import keep_freed_memory
from ..config import Device, Precision, TrainConfig
from ..console import Logger, log_stderr, progress
from ..data import DATASETS, DatasetSplits, ImageSplits, load_dataset
from ..data.loading import BatchSource
from ..errors import ParameterError, UserError
from ..evaluation import fast_epoch_metrics
from ..fileio import FolderLock, atomic_write_text
from ..losses import term_states
from ..mining import ScheduleEntry, get_miner, miner_for_epoch, parse_schedule
from ..models import EmbeddingNet, build_network, embed_images, ieee_float32
from ..sampler import ClassBalancedBatchSampler
from .checkpoint import load_checkpoint, restore_training_state, save_checkpoint
from .collapse import FALLBACK_MINER, CollapseGuard, is_collapsed
from .distributed import (
    ProcessContext,
    context_from_environment,
    peer_failures_reported,
    process_device,
    shard_batch,
    start_process_group,
    stop_process_group,
    use_distributed_batch_norm,
)
from .run_data import batch_source, prepare_run_data, train_input_shape
from .runfolder import complete_interrupted_save, prepare_run_folder, remove_stale_temporaries
from .runlog import RunLog
from .step import StepStats, train_step
from .tensorboard import TensorBoardWriter
from .validation import validation_loss

DEVICES = typing.get_args(Device)


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model, its config, the per-epoch records and the run folder."""

    model: EmbeddingNet
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path = Path(".")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: on CPUs without it, autocast emulates bf16 and a
    training step is several times slower than in fp32 (measured here on an AVX2-only EPYC: 1.8 s
    against 0.22 s per default step), so ``--precision auto`` must not choose it there."""
    if device.type == "cuda":
        # Compute capability 8.0 (Ampere) and later have bf16 tensor cores; torch.cuda.is_bf16_supported()
        # also says True where bf16 is only emulated (V100, T4), and asks the current device, not this one.
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: no way to tell cheaply, and emulation is the costly mistake
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(config: TrainConfig, device: torch.device) -> TrainConfig:
    """``config`` with ``precision`` "auto" replaced by what this device runs well.

    The resolved value is what config.json and the checkpoints record (and the run's first log
    line names), so a run can be repeated with the same arithmetic elsewhere.
    """
    if config.precision != "auto":
        return config
    chosen: Precision = "bf16" if native_bf16(device) else "fp32"
    return dataclasses.replace(config, precision=chosen)


def parameter_dtype(precision: Precision) -> torch.dtype:
    """The weights' dtype: float64 under precision fp64, else float32 (bf16 autocasts over float32 weights)."""
    return torch.float64 if precision == "fp64" else torch.float32


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
    batches: BatchSource  # the sampler's batches, uint8 on the device: indexed from memory or decoded from disk
    sampler: ClassBalancedBatchSampler
    val_images: torch.Tensor  # the images the validation triplets index (open set: carved from the training classes)
    val_triplets: torch.Tensor
    eval_images: torch.Tensor  # open set: the held-out classes' test images
    eval_labels: torch.Tensor
    seen_eval_images: torch.Tensor | None  # open set: the training classes' test images, for the seen_ figures
    seen_eval_labels: torch.Tensor | None
    select_images: torch.Tensor | None  # --selection_classes: training classes kept out of training, to choose best.pt by
    select_labels: torch.Tensor | None
    data_records: dict[str, Any]  # what the checkpoint records about the data: input, dataset_source, split
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
    compiled: torch.nn.Module | None = None  # --compile: torch.compile of the trainer (or model) the steps call
    lock: FolderLock | None = None  # held by the main process while it writes into run_dir
    loss_states: dict[str, Any] = field(default_factory=dict)  # state of the added loss terms (XBM's queue)

    def release(self) -> None:
        """Let other runs use the run folder again."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


class TrainingDiverged(UserError):
    """The loss or the weights became NaN or infinite: the run stopped before saving them."""

    exit_code = 1  # not a mistake in the command line, but a run that failed


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run; the message says what is saved and the command that continues it."""


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
    # Before anything is written: a missing tensorboard package refuses the run.
    board = TensorBoardWriter(config.tensorboard) if config.tensorboard and context.is_main_process else None
    # A dead or silent peer process ends this one with a message, not a hang or a traceback.
    with peer_failures_reported(context, Path(config.checkpoint_path)):
        run = prepare_run(config, resume=resume, overwrite=overwrite, data=data, log=log, context=context)
        config = run.config  # as resolved for this machine (precision auto)
        try:
            with ieee_float32(run.device):  # "fp32" on a GPU means fp32, not cuDNN's default TF32
                _train_epochs(run, board, log)
        except KeyboardInterrupt:
            raise TrainingInterrupted(_interrupted_message(run)) from None
        finally:
            if board is not None:
                board.close()
            run.release()
            stop_process_group(run.context)
    return TrainResult(model=run.model, config=config, history=run.history, run_dir=run.run_dir)


def _train_epochs(run: Run, board: TensorBoardWriter | None, log: Logger) -> None:
    """The epochs from ``run.start_epoch`` on: train, record, save, log; stop early under --patience."""
    config = run.config
    for epoch in range(run.start_epoch, config.epochs + 1):
        miner, means, seconds, lr = run_epoch(run, epoch, log)
        _stop_if_state_not_finite(run, epoch)  # before the record: its evaluation would embed NaN
        record = epoch_record(run, epoch, miner, lr, means, seconds)
        save_epoch(run, epoch, record)
        if board is not None:
            board.epoch(record)
        log(_format_record(record, config.epochs))
        if record["collapsed"]:
            log(_collapse_warning(record, config))
        if config.patience and epoch - record["best_epoch"] >= config.patience:
            log(f"stopping early after epoch {epoch}: no better selection VAL@1e-3 for {config.patience} epochs; "
                f"best.pt holds epoch {record['best_epoch']}")
            break
    if run.is_main_process:
        _plot_losses(run.history, run.run_dir, log)
    if board is not None:
        board.projector(embed_images(run.model, run.eval_images), run.eval_labels, run.eval_images, config.epochs)


def _quiet(message: str) -> None:
    del message


def _interrupted_message(run: Run) -> str:
    """What an interrupted run has saved, and a command that works from there."""
    last = run.run_dir / "last.pt"
    saved = run.history[-1]["epoch"] if run.history else None
    if saved is None and run.start_epoch > 1:  # resumed from a checkpoint without history
        saved = run.start_epoch - 1
    if saved is None:
        return ("interrupted before the first epoch was saved: there is nothing to resume; start the run again "
                "with --overwrite (it replaces what this one left)")
    if saved >= run.config.epochs:
        return f"interrupted after the last epoch ({saved}) was saved: the run is complete, {last} holds it"
    return f"interrupted; epochs up to {saved} are saved: continue with --resume {last}"


def _collapse_warning(record: dict[str, Any], config: TrainConfig) -> str:
    """What the log says when an epoch's embeddings collapsed, with advice that fits the epoch's miner."""
    if get_miner(record["miner"]).can_collapse:
        advice = (f"{record['miner']} mining often does this; try a longer semi-hard phase (--mining semihard:0.6,hard), "
                  "a lower --lr, or batch_all mining.")
    else:
        advice = f"even {record['miner']} mining could not keep them apart; try a lower --lr or a smaller --margin."
    return (
        f"WARNING: epoch {record['epoch']}: the embeddings have COLLAPSED (spread {record['embedding_spread']:.2e}, "
        f"loss {record['train_loss']:.4f} ~ margin {config.margin}): every image maps to nearly the same point. {advice}"
    )


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
    if checkpoint is not None and checkpoint["epoch"] > config.epochs:
        raise ParameterError("epochs", f"must be at least {checkpoint['epoch']}, the epochs {resume} already holds "
                                       f"(a resumed run trains on from there); got {config.epochs}")
    device = process_device(resolve_device(config.device), context)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # first: whatever asks for "the current GPU" gets this process's own
    config = resolve_precision(config, device)
    run_dir = Path(config.checkpoint_path)
    if not context.is_main_process:  # the main process alone locks, checks and writes the run folder
        return _prepare(config, run_dir, device, (resume, checkpoint), data, log, context)
    created = not run_dir.exists()
    # Locked before anything is checked or written: a second run into the same folder is refused at once.
    lock = FolderLock(run_dir, log=log).acquire()
    try:
        remove_stale_temporaries(run_dir)  # a killed run's half-written files: nobody else writes here while we hold the lock
        prepare_run_folder(run_dir, resume=Path(resume) if resume else None, resume_state=checkpoint, overwrite=overwrite)
        run = _prepare(config, run_dir, device, (resume, checkpoint), data, log, context)
        if resume and checkpoint is not None:
            complete_interrupted_save(run_dir, Path(resume), checkpoint)
    except BaseException:
        lock.release()
        if created:  # a run refused before it began leaves no folder behind
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    run.lock = lock
    return run


def _note_repeated_images(config: TrainConfig, sampler: ClassBalancedBatchSampler, n_train: int, log: Logger) -> None:
    """Settings that are valid but make a batch, or the cross-batch memory, hold one image more than once."""
    per_class, small = sampler.images_per_class_in_batch, sampler.classes_too_small()
    if small:
        # The sampler repeats a short class's images to fill its share: the copies are positives of
        # each other (identical ones without augmentation), which teach nothing.
        classes = len(sampler.class_indices)
        log(f"note: {small} of the {classes} training classes have fewer than the {per_class} images a batch takes of each "
            f"class ({config.batch_size} images over {sampler.classes_per_batch} classes), so their batches repeat images; "
            "a smaller --images_per_class or --batch_size, or a larger --num_images, avoids it")
    views = 2 if config.instance_weight > 0 else 1  # instance triplets queue two views of each image
    if config.xbm_size > n_train * views:
        log(f"note: --xbm_size {config.xbm_size} is more than the {n_train * views} embeddings an epoch makes "
            f"({n_train} training images{' x 2 views' if views == 2 else ''}): the memory would hold images more than once, "
            "the older copies from older weights; give at most that")


def _note_changed_images(config: TrainConfig, checkpoint: dict[str, Any], now: dict[str, int], log: Logger) -> None:
    """A resume from a folder or list whose images were added or removed trains on, but not as the run began."""
    then = checkpoint.get("image_counts")  # absent from runs saved before it was recorded
    if isinstance(then, dict) and then != now:
        log(f"note: {config.dataset} holds {now['train']:,} training and {now['test']:,} test images now, "
            f"{then.get('train', 0):,} and {then.get('test', 0):,} when the run began: the resumed epochs use the images "
            "there are now, so they are not the epochs an uninterrupted run would have trained")


def _prepare(
    config: TrainConfig, run_dir: Path, device: torch.device,
    resumed: tuple[str | Path | None, dict[str, Any] | None], data: DatasetSplits | None, log: Logger, context: ProcessContext,
) -> Run:
    resume, checkpoint = resumed
    if config.threads:
        torch.set_num_threads(config.threads)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if cores and config.threads > cores and context.is_main_process:  # accepted, but oversubscribed threads slow every step
            log(f"note: --threads {config.threads} is more than the {cores} CPU core{'s' * (cores != 1)} this process may use: "
                "threads beyond them wait for each other and slow training (leave it out to use them all)")
    if device.type == "cpu":
        keep_freed_memory()  # the step's activations reuse the heap instead of page-faulting fresh pages (1.2-1.45x)

    # Data: uint8 images (in memory, or on disk for image folders over --cache_images), a stratified
    # subset (of the training classes, open set), fixed validation triplets and evaluation subsets (see run_data).
    if data is None:
        # Only training may leave images on disk: evaluate and embed read every test image anyway.
        options = dataclasses.replace(config.image_options(), cache_images=config.cache_images)
        data = load_dataset(config.dataset, config.data_path, download=config.download, options=options)
    if config.num_images < config.batch_size:
        raise UserError(f"--num_images ({config.num_images}) must be at least --batch_size ({config.batch_size})")
    run_data = prepare_run_data(config, data, log)
    train_labels = run_data.train_labels
    sampler = ClassBalancedBatchSampler(
        train_labels, config.batch_size, len(train_labels) // config.batch_size, config.seed, config.images_per_class
    )
    if context.is_main_process:
        _note_repeated_images(config, sampler, len(train_labels), log)

    # Model and optimiser: the initial weights come from the seed alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        try:
            model = build_network(config.network, config.embedding_dim, train_input_shape(run_data), config.projection_dim)
        except ParameterError as error:
            if error.parameter != "input_shape":
                raise
            # the images' size is what the user chose (--image_size) or can choose, not an input_shape
            raise ParameterError("image_size", f"{error.problem.replace('got ', 'the images are ')} ({config.network})",
                                 related=("network",)) from None
    if isinstance(data, ImageSplits):  # image files: normalised by their training split's mean/std, inside the model
        model.set_input_normalization(data.mean, data.std)
    # NHWC convolutions are ~15% faster on CPU here (oneDNN's preferred layout).
    model = model.to(memory_format=torch.channels_last).to(device, parameter_dtype(config.precision))  # type: ignore[call-overload]  # torch's stubs lack memory_format
    # One fused kernel for all parameters where torch has it: 0.19 against 0.70 ms a step on the CPU,
    # and on a GPU one launch instead of several per parameter tensor.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _epoch_lr_lambda(config))
    run = Run(
        config=config, run_dir=run_dir, device=device, data=data,
        batches=batch_source(run_data, sampler, config, device, log), sampler=sampler,
        val_images=run_data.val_images, val_triplets=run_data.val_triplets,
        eval_images=run_data.eval_images, eval_labels=run_data.eval_labels,
        seen_eval_images=run_data.seen_eval_images, seen_eval_labels=run_data.seen_eval_labels,
        select_images=run_data.select_images, select_labels=run_data.select_labels, data_records=run_data.records,
        model=model, optimizer=optimizer, scheduler=scheduler, schedule=parse_schedule(config.mining),
        runlog=RunLog(run_dir), is_main_process=context.is_main_process, context=context,
        loss_states=term_states(config, config.embedding_dim, device),
    )
    if checkpoint is not None:
        restore_training_state(checkpoint, str(resume), model, optimizer, scheduler)
        if context.is_main_process and DATASETS.is_path(config.dataset):  # a folder or list may be edited; MNIST is fixed
            _note_changed_images(config, checkpoint, run_data.records["image_counts"], log)
        run.history = list(checkpoint.get("history", []))
        run.start_epoch = int(checkpoint["epoch"]) + 1
        run.fallback_epoch = checkpoint.get("mining_fallback_epoch")
    if context.is_distributed:
        start_process_group(context, device)
        # Batch statistics of the global batch, as one process would compute them.
        use_distributed_batch_norm(model)
        run.trainer = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if config.compile:
        # Only the training steps go through the compiled module; evaluation and the checkpoints use
        # ``model`` itself, so saved state_dict keys stay those of an eager run.
        run.compiled = torch.compile(run.trainer if run.trainer is not None else model)  # type: ignore[assignment]  # an OptimizedModule

    if run.is_main_process:
        atomic_write_text(run_dir / "config.json", config.to_json() + "\n")
        run.runlog.start(run.history)
    if run.start_epoch > config.epochs:  # resuming a run whose last save a kill may have cut short: completed, no epoch
        log(f"nothing to train: {resume} already holds all {config.epochs} epochs (give a larger --epochs to train on); "
            f"run folder {run_dir}")
        return run
    per_epoch = len(sampler) * config.batch_size
    # Whole batches only: say so when that leaves some of the drawn training images out of an epoch.
    drawn = f" (whole batches of the {len(train_labels)} training images)" if per_epoch != len(train_labels) else ""
    processes = f", in {context.world_size} processes" if context.is_distributed else ""
    log(
        f"training {config.network} on {data.name} ({device.type}, {config.precision}{processes}): "
        f"{per_epoch} images per epoch{drawn}, {len(sampler)} batches of {config.batch_size}, "
        f"epochs {run.start_epoch}..{config.epochs}, run folder {run_dir}"
    )
    return run


def _epoch_lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    # LambdaLR counts finished epochs: the step factor applies from epoch lr_drop_epoch + 1 on;
    # cosine starts at 1 and reaches lr_drop_factor in the last epoch.
    drop = config.lr_drop_epoch

    def step(finished_epochs: int) -> float:
        return config.lr_drop_factor if drop and finished_epochs >= drop else 1.0

    def cosine(finished_epochs: int) -> float:
        progress = finished_epochs / max(config.epochs - 1, 1)
        return config.lr_drop_factor + (1 - config.lr_drop_factor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return cosine if config.lr_schedule == "cosine" else step


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
        # Hard mining that starts after few steps (short runs switch to it early) pulls the embeddings together;
        # the guard sees it as the spread halving, long before is_collapsed would call them collapsed.
        log(
            f"note: epoch {epoch}: {miner_for_epoch(run.schedule, epoch, config.epochs)} mining shrank the embeddings "
            f"(a batch's spread fell below {guard.min_spread:.3f}, half of epoch {epoch - 1}'s), as it can early in "
            f"training; the epoch was redone with {FALLBACK_MINER} mining, which the run keeps "
            f"(--no-collapse_fallback keeps the schedule)"
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
    batches = progress(run.batches.epoch(epoch), total=len(run.batches), desc=f"epoch {epoch}/{run.config.epochs} [{miner}]")
    network = next(m for m in (run.compiled, run.trainer, run.model) if m is not None)
    for step, (images, labels) in enumerate(batches, 1):
        shard = shard_batch(labels, run.context) if run.trainer is not None else None
        stats = train_step(network, run.optimizer, images, labels, miner, run.config, gen, shard=shard, states=run.loss_states)
        _stop_if_diverged(run, epoch, step, stats.loss)
        if guard is not None and guard.trips(stats):
            return None  # the guard restores the epoch's starting weights, so this step's update is undone too
        for key in totals:
            totals[key] += getattr(stats, key)
    return totals


def _stop_if_diverged(run: Run, epoch: int, step: int, loss: float) -> None:
    """Stop the run at the first non-finite loss or gradient norm, before anything is saved.

    The gradients' norm costs one fused pass over the parameters (well under 1% of a step); it
    catches an overflowing update one step before the loss would show it.
    """
    grads = [p.grad for p in run.model.parameters() if p.grad is not None]
    grad_norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))) if grads else 0.0
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    what = "loss" if not math.isfinite(loss) else "gradient norm"
    value = loss if not math.isfinite(loss) else grad_norm
    raise TrainingDiverged(f"epoch {epoch}, step {step}: the {what} is {value}; training stopped ({_what_is_kept(run, epoch)})")


def _stop_if_state_not_finite(run: Run, epoch: int) -> None:
    """Stop before an epoch's record and save when its weights or BatchNorm statistics hold NaN or infinities.

    Checked on the whole state (buffers too): a BatchNorm running variance can overflow while every
    loss and gradient stays finite, and the evaluation would then only say that embeddings hold NaN.
    """
    bad = [name for name, tensor in run.model.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise TrainingDiverged(f"epoch {epoch}: {_describe_names(bad)} hold NaN or infinite values after the epoch; "
                               f"training stopped before saving them ({_what_is_kept(run, epoch)})")


def _describe_names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _what_is_kept(run: Run, epoch: int) -> str:
    """What a diverged run keeps (last.pt's epoch, the last finite weights) and what to try instead."""
    last = run.run_dir / "last.pt"
    kept = f"{last} still holds epoch {epoch - 1}, the last finite weights" if epoch > 1 else "no checkpoint was written"
    advice = "a lower --lr" + (" or --precision fp32" if run.config.precision != "fp32" else "")
    return f"{kept}); try a new run with {advice} (--lr is {run.config.lr:g}"


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
        "val_loss": validation_loss(run.model, run.val_images, run.val_triplets, config.margin),
        "epoch_seconds": seconds,
        "images_per_second": len(run.sampler) * config.batch_size / seconds,
    }
    if config.eval_every and (epoch % config.eval_every == 0 or epoch == config.epochs):
        eval_started = time.perf_counter()
        record.update(_epoch_figures(run.model, run.eval_images, run.eval_labels, run.device))
        if run.seen_eval_images is not None and run.seen_eval_labels is not None:  # open set: the training classes beside
            record.update(_epoch_figures(run.model, run.seen_eval_images, run.seen_eval_labels, run.device, prefix="seen_"))
            record["seen_eval_images"] = len(run.seen_eval_labels)
        record["eval_seconds"] = time.perf_counter() - eval_started
        record["eval_images"] = len(run.eval_labels)
    if run.select_images is not None and run.select_labels is not None:
        record.update(_epoch_figures(run.model, run.select_images, run.select_labels, run.device, prefix="select_"))
        record["best_epoch"] = _best_epoch([*run.history, record])
    epoch_stats = StepStats(
        loss=means["loss"], active_fraction=means["active_fraction"], mean_pos_dist=means["mean_pos_dist"],
        mean_neg_dist=means["mean_neg_dist"], num_triplets=0, embedding_spread=means["embedding_spread"],
    )
    record["collapsed"] = bool(is_collapsed(epoch_stats, config.margin))
    return record


def _epoch_figures(model: EmbeddingNet, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                   prefix: str = "") -> dict[str, Any]:
    """The fast per-epoch evaluation of ``images`` (VAL at FAR 1e-3, P@1, MAP@R, ...) on the run's device, keys prefixed."""
    metrics = fast_epoch_metrics(embed_images(model, images), labels, far=1e-3, device=device)
    return {f"{prefix}{key}": value for key, value in metrics.to_dict().items()}


def _best_epoch(history: list[dict[str, Any]]) -> int:
    """The epoch with the highest selection VAL@1e-3 (ties: higher selection P@1, then the earlier epoch).

    A VAL of None (too few pairs to resolve FAR 1e-3) counts as below any number.
    """
    def key(record: dict[str, Any]) -> tuple[float, float, int]:
        val = record["select_val"]
        return (-1.0 if val is None else val, record["select_precision_at_1"], -record["epoch"])

    return int(max((record for record in history if "select_val" in record), key=key)["epoch"])


# --------------------------------------------------------------------------- 4. save


def save_epoch(run: Run, epoch: int, record: dict[str, Any]) -> None:
    """Write last.pt, epoch_<n>.pt (and best.pt), then add the record to the history and metrics.jsonl.

    last.pt first: a kill between two of these writes then leaves last.pt naming the newest complete
    epoch, and the resume from it writes the files the kill cut short (see
    :func:`~tripletnet.training.runfolder.complete_interrupted_save`). Ctrl-C and SIGTERM wait for
    the save to end, so an interrupted run always has its newest epoch in every file.
    """
    _stop_if_state_not_finite(run, epoch)
    with _signals_deferred():
        run.history.append(record)
        if not run.is_main_process:
            return
        state = {
            "epoch": epoch,
            "config": run.config.to_dict(),
            "input_shape": list(run.model.input_shape),
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "history": run.history,
            **run.data_records,
            **({"mining_fallback_epoch": run.fallback_epoch} if run.fallback_epoch is not None else {}),
        }
        save_checkpoint(run.run_dir / "last.pt", state)
        save_checkpoint(run.run_dir / f"epoch_{epoch}.pt", state)
        if record.get("best_epoch") == epoch:
            save_checkpoint(run.run_dir / "best.pt", state)
        # Last: a line in metrics.jsonl means its epoch's checkpoint exists. A crash before this line
        # loses nothing, since a resume rewrites the file from the checkpoint's history.
        run.runlog.append(record)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block ends, then deliver the first one that came.

    By handler, not by signal mask: a mask is per thread, and the kernel hands a process signal to
    any thread that does not block it (torch's worker threads), whose handler would still interrupt
    the main thread. Python delivers signals to the main thread only, so elsewhere nothing is needed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: object) -> None:
        del frame
        received.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler installed outside Python, which cannot be put back
                signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])  # now through the restored handler (Ctrl-C's: KeyboardInterrupt)


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
    for prefix, name in (("", ""), ("seen_", "seen "), ("select_", "selection ")):
        if f"{prefix}val" in record:
            # VAL is None when the evaluation has too few pairs to resolve FAR 1e-3 (small image folders).
            val = record[f"{prefix}val"]
            parts.append(f"{name}VAL@1e-3 {'n/a' if val is None else f'{val:.4f}'} P@1 {record[f'{prefix}precision_at_1']:.4f}")
    if "best_epoch" in record:
        parts[-1] += f" (best: epoch {record['best_epoch']})"
    parts.append(f"{record['images_per_second']:.0f} img/s")
    return " | ".join(parts)


def _plot_losses(history: list[dict[str, Any]], run_dir: Path, log: Logger) -> None:
    if not history:
        return
    from ..plots import plot_losses

    path = plot_losses(history, run_dir / "losses.png")
    log(f"losses plot: {path}")

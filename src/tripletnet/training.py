"""The training loop, readable top to bottom: data -> sampler -> model -> mining/loss -> step.

``train(config)`` is what ``tripletnet train`` runs; a notebook can call it the same way.
Every epoch appends one record to ``<checkpoint_path>/metrics.jsonl`` and writes
``epoch_<n>.pt`` and ``last.pt``; the run's config is saved as ``config.json`` first.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .augment import random_affine
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import DatasetSplits, load_dataset, stratified_subset
from .errors import UserError
from .fileio import atomic_write_text
from .losses import StepStats, is_collapsed, triplet_step
from .models import EmbeddingNet, build_network, embed_images, images_to_input
from .sampler import ClassBalancedBatchSampler
from .schedule import miner_for_epoch, parse_schedule

Logger = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class TrainResult:
    model: EmbeddingNet
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path = Path(".")


def draw_validation_triplets(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` fixed random (anchor, positive, negative) index triplets, drawn once from the seed."""
    gen = torch.Generator().manual_seed(seed + 12_345)
    labels = labels.to(torch.int64)
    triplets = []
    while len(triplets) < count:
        anchor = int(torch.randint(len(labels), (1,), generator=gen))
        same = torch.nonzero(labels == labels[anchor]).flatten()
        same = same[same != anchor]
        other = torch.nonzero(labels != labels[anchor]).flatten()
        if len(same) == 0 or len(other) == 0:
            continue
        positive = same[torch.randint(len(same), (1,), generator=gen)]
        negative = other[torch.randint(len(other), (1,), generator=gen)]
        triplets.append((anchor, int(positive), int(negative)))
    return torch.tensor(triplets, dtype=torch.int64)


def validation_loss(model: EmbeddingNet, images: torch.Tensor, triplets: torch.Tensor, margin: float) -> float:
    emb = embed_images(model, images[triplets.flatten()]).view(len(triplets), 3, -1)
    d_ap = (emb[:, 0] - emb[:, 1]).norm(dim=1)
    d_an = (emb[:, 0] - emb[:, 2]).norm(dim=1)
    return float(torch.relu(d_ap - d_an + margin).mean())


def _epoch_lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    # LambdaLR counts finished epochs: factor applies from epoch lr_drop_epoch + 1 on.
    drop = config.lr_drop_epoch

    def factor(finished_epochs: int) -> float:
        return config.lr_drop_factor if drop and finished_epochs >= drop else 1.0

    return factor


def _progress(iterable, total: int, desc: str):
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass
    return iterable


def train(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    data: DatasetSplits | None = None,
    log: Logger = _stderr,
) -> TrainResult:
    """Train an embedding network as ``config`` says; resume from a checkpoint if given.

    ``data`` may be passed to reuse an already loaded dataset (tests, notebooks).
    """
    # --- 1. settle the configuration and the run folder (nothing written on a user mistake)
    checkpoint = load_checkpoint(resume) if resume else None
    config.validate()
    run_dir = Path(config.checkpoint_path)
    if checkpoint is None and (run_dir / "last.pt").exists() and not overwrite:
        raise UserError(
            f"{run_dir} already holds a run (last.pt): continue it with --resume {run_dir / 'last.pt'}, "
            "choose another --checkpoint_path, or pass --overwrite"
        )
    if config.threads:
        torch.set_num_threads(config.threads)

    # --- 2. data: an in-memory uint8 tensor, a stratified subset, fixed validation triplets
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
    eval_images, eval_labels = data.test_images[eval_subset], data.test_labels[eval_subset]

    # --- 3. model, optimiser, schedule
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = build_network(config.network, config.embedding_dim)
    # NHWC convolutions are ~15% faster on CPU here (oneDNN's preferred layout).
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _epoch_lr_lambda(config))
    schedule = parse_schedule(config.mining)
    history: list[dict[str, Any]] = []
    start_epoch = 1
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        history = list(checkpoint.get("history", []))
        start_epoch = int(checkpoint["epoch"]) + 1
        if "torch_rng" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng"])

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", config.to_json() + "\n")
    metrics_path = run_dir / "metrics.jsonl"
    atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in history))
    log(
        f"training {config.network} on {data.name}: {config.num_images} images/epoch, "
        f"{len(sampler)} batches of {config.batch_size}, epochs {start_epoch}..{config.epochs}, run folder {run_dir}"
    )

    # --- 4. the loop
    # Hard mining can collapse the embeddings within an epoch (Fashion-MNIST does); with
    # config.collapse_fallback such an epoch is undone and the run continues with semi-hard mining.
    fallback_epoch: int | None = checkpoint.get("mining_fallback_epoch") if checkpoint is not None else None
    for epoch in range(start_epoch, config.epochs + 1):
        miner = miner_for_epoch(schedule, epoch, config.epochs)
        if fallback_epoch is not None and miner == "hard":
            miner = "semihard"
        lr = optimizer.param_groups[0]["lr"]
        guard = None
        if config.collapse_fallback and miner == "hard" and history:
            guard = COLLAPSE_DROP * history[-1]["embedding_spread"]
            snapshot = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
        started = time.perf_counter()
        epoch_result = run_epoch(model, optimizer, sampler, train_images, train_labels, epoch, miner, config, guard)
        if epoch_result is None:  # collapsing: undo the epoch, continue with semi-hard mining
            model.load_state_dict(snapshot[0])
            optimizer.load_state_dict(snapshot[1])
            fallback_epoch, miner = epoch, "semihard"
            log(
                f"WARNING: epoch {epoch}: hard mining was COLLAPSING the embeddings (batch spread fell below "
                f"{guard:.3f}, half of the last epoch's); the epoch was undone and training continues with semi-hard "
                "mining (--no-collapse_fallback keeps hard mining)"
            )
            epoch_result = run_epoch(model, optimizer, sampler, train_images, train_labels, epoch, miner, config, None)
        totals, steps = epoch_result
        seconds = time.perf_counter() - started
        scheduler.step()

        means = {key: value / steps for key, value in totals.items()}
        record: dict[str, Any] = {
            "epoch": epoch,
            "miner": miner,
            "mining_fallback": fallback_epoch is not None,
            "lr": lr,
            "train_loss": means["loss"],
            "active_fraction": means["active_fraction"],
            "mean_pos_dist": means["mean_pos_dist"],
            "mean_neg_dist": means["mean_neg_dist"],
            "embedding_spread": means["embedding_spread"],
            "val_loss": validation_loss(model, data.test_images, val_triplets, config.margin),
            "epoch_seconds": seconds,
            "images_per_second": steps * config.batch_size / seconds,
        }
        if config.eval_every and (epoch % config.eval_every == 0 or epoch == config.epochs):
            from .evaluation import fast_epoch_metrics

            eval_started = time.perf_counter()
            metrics = fast_epoch_metrics(embed_images(model, eval_images), eval_labels, far=1e-3)
            record.update(metrics.to_dict())
            record["eval_seconds"] = time.perf_counter() - eval_started
            record["eval_images"] = n_eval
        epoch_stats = StepStats(
            loss=means["loss"], active_fraction=means["active_fraction"], mean_pos_dist=means["mean_pos_dist"],
            mean_neg_dist=means["mean_neg_dist"], num_triplets=0, embedding_spread=means["embedding_spread"],
        )
        record["collapsed"] = bool(is_collapsed(epoch_stats, config.margin))
        history.append(record)

        with open(metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        state = {
            "epoch": epoch,
            "config": config.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            **({"mining_fallback_epoch": fallback_epoch} if fallback_epoch is not None else {}),
        }
        save_checkpoint(run_dir / f"epoch_{epoch}.pt", state)
        save_checkpoint(run_dir / "last.pt", state)
        log(_format_record(record, config.epochs))
        if record["collapsed"]:
            log(
                f"WARNING: epoch {epoch}: the embeddings have COLLAPSED (spread {record['embedding_spread']:.2e}, "
                f"loss {record['train_loss']:.4f} ~ margin {config.margin}): every image maps to nearly the same point. "
                "Hard mining from the start often does this; try a longer semi-hard phase (--mining semihard:0.6,hard), "
                "a lower --lr, or batch_all mining."
            )

    _plot_losses(history, run_dir, log)
    return TrainResult(model=model, config=config, history=history, run_dir=run_dir)


# Undo a hard-mining epoch whose batch spread falls below this fraction of the previous epoch's mean.
COLLAPSE_DROP = 0.5

EpochTotals = tuple[dict[str, float], int]


def run_epoch(
    model: EmbeddingNet,
    optimizer: torch.optim.Optimizer,
    sampler: ClassBalancedBatchSampler,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    epoch: int,
    miner: str,
    config: TrainConfig,
    min_spread: float | None,
) -> EpochTotals | None:
    """One pass over the epoch's batches; sums of the step statistics and the step count.

    Returns None as soon as a batch's embedding spread falls below ``min_spread`` (collapse).
    """
    gen = sampler.epoch_generator(epoch)  # drives augmentation too: an epoch replays exactly
    model.train()
    totals = dict.fromkeys(("loss", "active_fraction", "mean_pos_dist", "mean_neg_dist", "embedding_spread"), 0.0)
    batches = sampler.batches(epoch)
    for indices in _progress(batches, len(batches), f"epoch {epoch}/{config.epochs} [{miner}]"):
        stats = train_step(model, optimizer, train_images[indices], train_labels[indices], miner, config, gen)
        if min_spread is not None and stats.embedding_spread < min_spread:
            return None  # the caller restores the epoch's starting weights, so this step's update is undone too
        for key in totals:
            totals[key] += getattr(stats, key)
    return totals, len(batches)


def train_step(
    model: EmbeddingNet,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    miner: str,
    config: TrainConfig,
    gen: torch.Generator,
) -> StepStats:
    """One optimisation step on a batch of uint8 images: augment, embed, mine, loss, update."""
    inputs = images_to_input(images)
    if config.augment:
        inputs = random_affine(inputs, gen)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        embeddings = model(inputs)
    loss, stats = triplet_step(embeddings.float(), labels, miner, config.margin)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return stats


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
    from .plots import plot_losses

    path = plot_losses(history, run_dir / "losses.png")
    log(f"losses plot: {path}")

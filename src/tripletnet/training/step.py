"""One training step: augment, embed, then the triplet part (distances once, mine, loss) and the statistics the loop logs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..augment import apply_affine, draw_affine, draw_elastic, draw_erasing, erase, vary_stroke
from ..config import TrainConfig
from ..distances import pairwise_distances
from ..losses import added_terms, counted_distance_sums, triplet_hinges
from ..mining import get_miner
from ..models import images_to_input
from .distributed import BatchShard, gather_global_batch


@dataclass
class StepStats:
    """What one training step measured (plain floats, ready to log).

    ``mean_pos_dist`` and ``mean_neg_dist`` are NaN when nothing was mined.
    """

    loss: float
    active_fraction: float  # share of mined triplets with positive loss
    mean_pos_dist: float  # mean d(a,p) over mined triplets
    mean_neg_dist: float  # mean d(a,n) over mined triplets
    num_triplets: int
    embedding_spread: float  # mean distance of the embeddings from their batch mean


def embedding_spread(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean distance of the embeddings from their centroid: 0 when every input maps to the same
    point (collapse); for unit vectors at most 1, and ~1 when they are spread over the sphere."""
    return (embeddings - embeddings.mean(dim=0)).norm(dim=1).mean()


def _nothing_mined(dist: torch.Tensor, spread: torch.Tensor) -> tuple[torch.Tensor, StepStats]:
    """A zero loss that still backpropagates, and statistics that say nothing was mined."""
    return dist.sum() * 0.0, StepStats(0.0, 0.0, math.nan, math.nan, 0, float(spread))


def triplet_step(
    embeddings: torch.Tensor, labels: torch.Tensor, miner: str, margin: float, *, use_numpy: bool | None = None
) -> tuple[torch.Tensor, StepStats]:
    """Distances once, mine, loss, statistics: what the training loop calls every step.

    The loss is computed as the miner's ``loss_form`` says: from the listed triplets, or from
    per-pair counts (batch-all, whose triplets are too many to list: ~95 million at batch 1024);
    both give the same loss, gradient and statistics. One host sync for the statistics.

    Args:
        embeddings: (B, D) embeddings (any device); the loss backpropagates into them.
        labels: (B,) labels on the same device.
        miner: a registered miner name (see :func:`tripletnet.mining.miner_names`).
        margin: the triplet margin.
        use_numpy: force the miner's numpy (True) or torch (False) path; default numpy on CPU.

    Returns:
        The loss (a 0-d tensor) and the step's :class:`StepStats`.
    """
    spec = get_miner(miner)
    dist = pairwise_distances(embeddings)
    with torch.no_grad():
        spread = embedding_spread(embeddings.detach())
    if spec.loss_form == "counts":
        assert spec.count is not None  # MinerSpec guarantees it
        counts = spec.count(dist, labels, margin, use_numpy=use_numpy)
        if counts.total == 0:
            return _nothing_mined(dist, spread)
        pos_sum, neg_sum = counted_distance_sums(dist, counts)  # the loss's own terms give the statistics
        loss = (pos_sum - neg_sum) / counts.total + margin
        with torch.no_grad():
            values = torch.stack([loss, pos_sum / counts.total, neg_sum / counts.total, spread]).tolist()
        # Every counted triplet has positive loss by construction: the active fraction is 1.
        return loss, StepStats(values[0], 1.0, values[1], values[2], counts.total, values[3])

    triplets = spec.mine(dist, labels, margin, use_numpy=use_numpy)
    if len(triplets) == 0:
        return _nothing_mined(dist, spread)
    hinge, d_ap, d_an = triplet_hinges(dist, triplets, margin)
    loss = torch.relu(hinge).mean()
    with torch.no_grad():
        active = (hinge > 0).float().mean()
        values = torch.stack([loss.detach(), active, d_ap.mean(), d_an.mean(), spread]).tolist()
    return loss, StepStats(values[0], values[1], values[2], values[3], len(triplets), values[4])


def augment(
    inputs: torch.Tensor, config: TrainConfig, gen: torch.Generator, share: tuple[torch.Tensor, int] | None = None
) -> torch.Tensor:
    """The run's augmentation of a float batch: stroke width, then one resampling for the affine
    transform, the mirror and the elastic field, then random erasing. Each kind draws only when enabled, so runs that do
    not use it draw exactly what they always drew.

    Args:
        inputs: (B, C, H, W) float images: the whole batch, or this process's share of it.
        config: the run's config (rotation, scaling, shift, hflip, elastic, stroke, erasing).
        gen: the epoch's CPU generator.
        share: when several processes train, (the positions of ``inputs`` in the global batch,
            the global batch's size): everything is drawn for the global batch, as one process
            would, and the share's draws are applied.

    Returns:
        The augmented images.
    """
    _, _, height, width = inputs.shape
    count = share[1] if share is not None else len(inputs)
    theta = draw_affine(count, height, width, gen, config.rotation, config.scaling, config.shift, config.hflip)
    field = draw_elastic(count, height, width, gen, config.elastic) if config.elastic > 0 else None
    stroke = torch.rand(count, generator=gen) if config.stroke > 0 else None
    boxes = draw_erasing(count, height, width, gen, config.erasing) if config.erasing > 0 else None
    if share is not None:
        positions = share[0]
        theta = theta[positions]
        field = field[positions] if field is not None else None
        stroke = stroke[positions] if stroke is not None else None
        boxes = boxes[positions] if boxes is not None else None
    if stroke is not None:
        inputs = vary_stroke(inputs, stroke, config.stroke)
    inputs = apply_affine(inputs, theta, field)
    return erase(inputs, boxes) if boxes is not None else inputs


INSTANCE_MINER = "semihard"
"""The miner of the instance-level triplets: each view has one positive (its other view), and the
semi-hard rule picks a negative just beyond it without the collapse risk of the hardest one."""


def instance_triplet_step(
    embeddings: torch.Tensor, labels: torch.Tensor, miner: str, config: TrainConfig
) -> tuple[torch.Tensor, StepStats]:
    """Class triplets plus weighted instance-level triplets on two views of every image.

    ``embeddings`` holds the first views of a batch followed by the second views. The class term
    mines both views with the class labels (an image's other view is one more positive); the
    instance term labels each image by its position, so the other view is the only positive and
    every other image, of any class, a negative. The statistics are the class term's.

    Args:
        embeddings: (2B, D) embeddings: B first views, then the same B images' second views.
        labels: (B,) class labels of the B images.
        miner: the epoch's class miner.
        config: the run's config (margin, instance weight and margin).

    Returns:
        The combined loss and the class term's :class:`StepStats`.
    """
    batch = len(labels)
    loss, stats = triplet_step(embeddings, labels.repeat(2), miner, config.margin)
    identities = torch.arange(batch, device=labels.device).repeat(2)
    instance_loss, _ = triplet_step(embeddings, identities, INSTANCE_MINER, config.instance_margin)
    return loss + config.instance_weight * instance_loss, stats


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    miner: str,
    config: TrainConfig,
    gen: torch.Generator,
    shard: BatchShard | None = None,
    states: dict[str, Any] | None = None,
) -> StepStats:
    """One optimisation step on a batch of uint8 images: augment, embed, mine, loss, update.

    Args:
        model: the network (DistributedDataParallel-wrapped when ``shard`` is given), on the batch's device.
        optimizer: its optimiser.
        images: uint8 (B, H, W) or (B, C, H, W) images of the (global) batch on the model's device.
        labels: (B,) labels on the same device.
        miner: a registered miner name.
        config: the run's config (augment, precision, margin).
        gen: the epoch's CPU generator (augmentation draws from it).
        shard: this process's share of the global batch when several processes train; it embeds
            only its share, gathers everyone's embeddings and mines the whole batch.
        states: the run's state of the added loss terms (:func:`tripletnet.losses.term_states`),
            e.g. cross-batch memory's queue; needed when the config enables such a term.

    Returns:
        The step's statistics (of the whole global batch: the same on every process).
    """
    dtype = next(model.parameters()).dtype  # float64 under --precision fp64, else float32
    instance = config.instance_weight > 0
    if shard is None:
        inputs = images_to_input(images, dtype)
        if instance:
            # Two independently augmented views of every image, embedded in one forward pass.
            inputs = torch.cat([inputs, inputs])
        if config.augment:
            inputs = augment(inputs, config, gen)
    else:
        # Only this process's share is converted and augmented.
        inputs = images_to_input(images[shard.positions.to(images.device)], dtype)
        positions, global_size = shard.positions, len(labels)
        if instance:  # this share's rows of both views, in the global two-view batch
            inputs = torch.cat([inputs, inputs])
            positions, global_size = torch.cat([positions, positions + global_size]), 2 * global_size
        if config.augment:
            inputs = augment(inputs, config, gen, (positions, global_size))
    # Autocast follows the device the batch is on (bf16 on CPU and CUDA).
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        embeddings = model(inputs, project=True)  # through the projection head, if the network has one
    embeddings = embeddings.to(torch.promote_types(embeddings.dtype, torch.float32))  # bf16 -> fp32; fp64 stays
    if shard is not None:
        # Loss scale 1: see tripletnet.training.distributed for why DDP's averaging then gives
        # the single-process gradient.
        if instance:  # each view's rows gathered on their own, first views then second views
            first, second = embeddings.chunk(2)
            embeddings = torch.cat([gather_global_batch(first, shard), gather_global_batch(second, shard)])
        else:
            embeddings = gather_global_batch(embeddings, shard)
    if instance:
        loss, stats = instance_triplet_step(embeddings, labels, miner, config)
    else:
        loss, stats = triplet_step(embeddings, labels, miner, config.margin)
    # The registered added terms (cross-batch memory) see every embedding with its class label.
    extra = added_terms(embeddings, labels.repeat(2) if instance else labels, config, states or {})
    if extra is not None:
        loss = loss + extra
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return stats

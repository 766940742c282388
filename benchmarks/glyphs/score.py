"""``python -m benchmarks.glyphs run DATA``: every scorer on every test condition, one markdown table.

Scorers, all embedding the same images and scored by the same functions:

* ``raw pixels``: the image's pixels as one L2-normalised vector (what any embedding must beat);
* each ``--checkpoint LABEL=FILE``: a tripletnet checkpoint (``tripletnet train --dataset DATA``);
* ``PML loop`` (``--pml_epochs N``, 0 = skip): the project's plain pytorch-metric-learning peer
  (:mod:`benchmarks.pml_loop`: its network, Adam at 1e-4, semi-hard ``TripletMarginMiner`` and
  ``TripletMarginLoss`` with margin 1), trained on DATA/train with PML's ``MPerClassSampler``
  (4 images of each class in a batch: its class-balanced sampler needs every class in a batch,
  which thousands of classes cannot be).

Metrics per condition: all-pairs VAL at FAR 1e-3, 1e-4 and 1e-5 and EER
(:func:`tripletnet.evaluation.verification.all_pairs`), P@1 and MAP@R
(:func:`tripletnet.evaluation.retrieval_metrics`), and one-shot 5- and 20-way accuracy over seeded
episodes (:func:`tripletnet.evaluation.oneshot.one_shot_accuracy`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tripletnet.errors import UserError
from tripletnet.evaluation import retrieval_metrics
from tripletnet.evaluation.oneshot import one_shot_accuracy
from tripletnet.evaluation.verification import all_pairs
from tripletnet.fileio import atomic_write_text

from ..common import table
from .build import CONDITIONS, MANIFEST

FARS = (1e-3, 1e-4, 1e-5)
N_WAYS = (5, 20)
Embedder = Callable[[torch.Tensor], torch.Tensor]  # uint8 (N, 1, H, W) -> (N, D)


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # uint8 (N, 1, H, W)
    labels: torch.Tensor  # (N,) identity index, identities sorted by name
    identities: tuple[str, ...]


def read_identity_folder(root: str | Path) -> ImageSet:
    """Every ``root/<identity>/*.png`` as uint8 grey images (the build writes them at the final size)."""
    root = Path(root)
    identities = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not identities:
        raise UserError(f"{root} holds no identity folders: is it a glyph build (python -m benchmarks.glyphs build)?")
    images, labels = [], []
    for label, identity in enumerate(identities):
        for path in sorted((root / identity).glob("*.png")):
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("L")))
            labels.append(label)
    return ImageSet(torch.from_numpy(np.stack(images))[:, None], torch.tensor(labels), identities)


def raw_pixels(images: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(images.flatten(1).float(), dim=1)


def checkpoint_embedder(path: str) -> Embedder:
    from tripletnet.inference import load_model

    model = load_model(path)
    return model.embed


def score(embeddings: torch.Tensor, labels: torch.Tensor, episodes: int, seed: int) -> dict[str, float | None]:
    """The benchmark's metrics of one condition's embeddings."""
    verification = all_pairs(embeddings, labels, far=FARS[0], fars=FARS, exact_auc=False)
    by_far = {float(key): value for key, value in verification.val_at_far.items()}
    retrieval = retrieval_metrics(embeddings, labels)
    result: dict[str, float | None] = {f"VAL@{far:.0e}".replace("e-0", "e-"): by_far.get(far) for far in FARS}
    result |= {"EER": verification.eer, "P@1": retrieval.precision_at_1, "MAP@R": retrieval.map_at_r}
    identities = len(torch.unique(labels))
    for n_way in N_WAYS:  # a small build may have fewer identities than ways: n/a
        result[f"{n_way}-way"] = (one_shot_accuracy(embeddings, labels, n_way, episodes, seed).accuracy
                                  if identities >= n_way else None)
    return result


def pml_loop_embedder(train: ImageSet, epochs: int, seed: int = 0, batch_size: int = 256) -> Embedder:
    """Train the plain PML peer on the training images and return its embedding function."""
    from pytorch_metric_learning import losses, miners, samplers  # benchmark-only dependency
    from torch.utils.data import DataLoader, TensorDataset

    from ..pml_loop import EmbeddingNetSized

    torch.manual_seed(seed)
    side = train.images.shape[-1]
    model = EmbeddingNetSized(64)
    after_convs = ((side - 4) // 2 - 4) // 2  # the two conv5 + pool2 blocks
    model.fc[0] = torch.nn.Linear(64 * after_convs * after_convs, 256)  # the peer's network, sized for this input

    def to_input(images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - 0.5) / 0.5

    batch_size = min(batch_size, 4 * len(train.identities))  # the sampler needs m x classes >= the batch
    sampler = samplers.MPerClassSampler(train.labels, m=4, batch_size=batch_size, length_before_new_iter=len(train.labels))
    loader = DataLoader(TensorDataset(to_input(train.images), train.labels), batch_size=batch_size, sampler=sampler,
                        drop_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    miner = miners.TripletMarginMiner(margin=1.0, type_of_triplets="semihard")
    loss_fn = losses.TripletMarginLoss(margin=1.0)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            embeddings = model(x)
            loss = loss_fn(embeddings, y, miner(embeddings, y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()

    @torch.no_grad()
    def embed(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(to_input(chunk)) for chunk in images.split(1000)])

    return embed


def run(data: str | Path, checkpoints: dict[str, str], *, pml_epochs: int, episodes: int = 1000, seed: int = 0,
        log: Callable[[str], None] = print) -> dict[str, dict[str, dict[str, float | None]]]:
    """Scores by condition, then by scorer (raw pixels, the checkpoints, the PML loop)."""
    data = Path(data)
    conditions = {name: read_identity_folder(data / "conditions" / name) for name in CONDITIONS}
    scorers: dict[str, Embedder] = {"raw pixels": raw_pixels}
    scorers |= {label: checkpoint_embedder(path) for label, path in checkpoints.items()}
    if pml_epochs > 0:
        started = time.perf_counter()
        scorers[f"PML loop ({pml_epochs} ep)"] = pml_loop_embedder(read_identity_folder(data / "train"), pml_epochs, seed)
        log(f"trained the PML loop for {pml_epochs} epochs in {time.perf_counter() - started:.0f} s")
    results: dict[str, dict[str, dict[str, float | None]]] = {}
    for condition, images in conditions.items():
        results[condition] = {}
        for label, embed in scorers.items():
            results[condition][label] = score(embed(images.images), images.labels, episodes, seed)
            log(f"{condition} / {label}: {json.dumps(results[condition][label])}")
    return results


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def markdown(results: dict[str, dict[str, dict[str, float | None]]], data: str | Path, command: str) -> str:
    lines = [f"Glyph benchmark `{data}`", "", f"    {command}", ""]
    for condition, by_scorer in results.items():
        metrics = list(next(iter(by_scorer.values())))
        lines += [f"### {condition.replace('_', ' ')}", "",
                  table(["scorer", *metrics], [[label, *map(_cell, values.values())] for label, values in by_scorer.items()]), ""]
    return "\n".join(lines)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="a glyph build (python -m benchmarks.glyphs build)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="LABEL=FILE",
                        help="a tripletnet checkpoint to score, labelled (repeat for several)")
    parser.add_argument("--pml_epochs", type=int, default=10, help="epochs of the PML loop on DATA/train (0 = skip it)")
    parser.add_argument("--episodes", type=int, default=1000, help="one-shot episodes per N")
    parser.add_argument("--seed", type=int, default=0, help="one-shot episodes and the PML loop's initial weights")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", help="write the markdown report here (and its numbers beside it as .json)")


def _check_run_arguments(args: argparse.Namespace) -> None:
    """What would otherwise fail after minutes of training and scoring, or as a traceback."""
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    if not (Path(args.data) / MANIFEST).is_file():
        raise UserError(f"{args.data} is not a glyph build (no {MANIFEST}): make one with 'python -m benchmarks.glyphs build'")
    if args.out:
        out = Path(args.out)
        if out.suffix.lower() == ".json":
            raise UserError(f"--out {out} names the markdown report, and its numbers go beside it as .json: "
                            "give a .md name")
        if out.is_dir():
            raise UserError(f"cannot write {out}: it is a folder")


def run_from_args(args: argparse.Namespace) -> None:
    import shlex
    import sys

    _check_run_arguments(args)
    torch.set_num_threads(args.threads)
    checkpoints: dict[str, Any] = {}
    for item in args.checkpoint:
        label, sep, path = item.partition("=")
        if not sep:
            label, path = Path(item).parent.name or item, item
        checkpoints[label] = path
    results = run(args.data, checkpoints, pml_epochs=args.pml_epochs, episodes=args.episodes, seed=args.seed)
    report = markdown(results, args.data, "python -m benchmarks.glyphs " + shlex.join(sys.argv[1:]))
    print(report)
    if args.out:
        atomic_write_text(args.out, report + "\n")
        atomic_write_text(Path(args.out).with_suffix(".json"), json.dumps(results, indent=1) + "\n")

"""Loading 64x64 RGB images from disk against the training step: which one limits a streamed run?

``python -m benchmarks.loading`` (from the repository root, ``PYTHONPATH=src``) writes a synthetic
identity folder of PNG and JPEG files under /tmp, then measures, side by side in one process:

1. **loading alone**: one epoch of :class:`tripletnet.data.loading.StreamedBatches` (the
   DataLoader a run over the ``--cache_images`` budget uses: decode, resize/crop, stack, behind the
   P x K batches) with 0, 1 and 2 worker processes, nothing else running; images/s.
2. **the training step** on the same batch shape: ``train_step`` of network conv3, batch 256,
   3 x 64 x 64, fp32, the default augmentation and mining, on batches held in memory; images/s.
3. **both**: a streamed training run's steps (loading and step together) with 0 and 2 workers, so
   the overlap (or the contention for the cores) shows.

Medians of repeats after a warm-up; the files are in the page cache after the warm-up, so this is
decoding, not disk, speed. Takes a few minutes on 2 cores. Measurement only: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tripletnet.config import TrainConfig
from tripletnet.data.folder import ImageFiles
from tripletnet.data.loading import StreamedBatches
from tripletnet.models import build_network
from tripletnet.sampler import ClassBalancedBatchSampler
from tripletnet.training import train_step

from .common import fmt, load_note, log, table
from .machine import describe
from .timing import measure

HERE = Path(__file__).resolve().parent
BATCH = 256
SIZE = 64
IDENTITIES = 48
WORKERS = (0, 1, 2)
FORMATS = {"png": "PNG", "jpeg": "JPEG"}


def write_folder(root: Path, images: int, suffix: str) -> tuple[ImageFiles, torch.Tensor]:
    """``images`` 64x64 RGB files in ``root/<identity>/`` (written once, reused by later runs), and their labels."""
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for index in range(images):
        identity = index % IDENTITIES
        path = root / f"id{identity:03d}" / f"{index:05d}.{suffix}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # A smooth colour gradient, a block of the identity's colour and some noise: files of a
            # photo-like size, neither flat (tiny files) nor pure noise (huge PNGs).
            ramp = np.linspace(0, 1, SIZE)
            base = rng.uniform(0, 255, 3) * ramp[:, None, None] + rng.uniform(0, 255, 3) * ramp[None, :, None]
            x, y = rng.integers(8, 40, 2)
            base[y:y + 20, x:x + 20] = (identity * 37 % 256, identity * 91 % 256, identity * 53 % 256)
            pixels = np.clip(base / 2 + rng.normal(0, 10, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(path, FORMATS[suffix], **({"quality": 90} if suffix == "jpeg" else {}))
        paths.append(path)
        labels.append(identity)
    return ImageFiles(tuple(paths), tuple(str(p) for p in paths), SIZE, 3), torch.tensor(labels)


class Counter:
    """Hands out epoch numbers 1, 2, ... so every timed pass draws a new epoch's batches."""

    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value


def loading_rate(files: ImageFiles, labels: torch.Tensor, workers: int, repeats: int) -> float:
    """Median images/s of whole epochs of streamed batches (worker start-up included, as in a run)."""
    sampler = ClassBalancedBatchSampler(labels, BATCH, len(labels) // BATCH, seed=0)
    source = StreamedBatches(files, labels, sampler, torch.device("cpu"), num_workers=workers)
    epochs = Counter()
    timing = measure(lambda: sum(len(images) for images, _ in source.epoch(epochs.next())), repeats, warmup=1)
    return len(sampler) * BATCH / timing.median


def step_rate(files: ImageFiles, labels: torch.Tensor, repeats: int) -> float:
    """Median images/s of the default training step (conv3, fp32) on one batch held in memory."""
    config = TrainConfig(precision="fp32", batch_size=BATCH)
    sampler = ClassBalancedBatchSampler(labels, BATCH, 1, seed=0)
    indices = sampler.batches(1)[0]
    images = torch.from_numpy(np.stack([files.read(int(i)) for i in indices]))
    model = build_network(config.network, config.embedding_dim, (3, SIZE, SIZE)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(0)
    timing = measure(lambda: train_step(model, optimizer, images, labels[indices], "semihard", config, gen), repeats, warmup=1)
    return BATCH / timing.median


def streamed_training_rate(files: ImageFiles, labels: torch.Tensor, workers: int, steps: int) -> float:
    """images/s of ``steps`` training steps fed by streamed batches (loading and compute together)."""
    config = TrainConfig(precision="fp32", batch_size=BATCH)
    sampler = ClassBalancedBatchSampler(labels, BATCH, steps + 1, seed=0)
    source = StreamedBatches(files, labels, sampler, torch.device("cpu"), num_workers=workers)
    model = build_network(config.network, config.embedding_dim, (3, SIZE, SIZE)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(0)
    started = None
    for images, batch_labels in source.epoch(1):
        train_step(model, optimizer, images, batch_labels, "semihard", config, gen)
        started = started or time.perf_counter()  # the first step (worker start-up, warm-up) is not timed
    assert started is not None
    return steps * BATCH / (time.perf_counter() - started)


def verdict(best: dict[str, tuple[int, float]], slowest: float, step: float) -> str:
    """Which side limits a streamed run, in words: ``best`` loader per format, the ``slowest`` loading rate, the step's rate."""
    bottleneck = (
        f"**Compute is the bottleneck**: even the slowest loading case delivers {slowest / step:.0f}x the images a "
        f"training step consumes ({fmt(slowest, 0)} against {fmt(step, 0)} images/s)"
        if slowest > step else
        f"**Loading is the bottleneck**: its slowest case delivers {fmt(slowest, 0)} images/s, the step consumes {fmt(step, 0)}"
    )
    workers = ", ".join(f"{suffix.upper()} {count} workers ({fmt(rate, 0)} images/s)" for suffix, (count, rate) in best.items())
    return (f"{bottleneck}. Fastest loader per format: {workers}. On 2 cores, worker processes compete with the "
            "step (and with each other) for the same cores, and each batch is pickled between processes: more "
            "workers need spare cores to pay off. The streamed-training rows show the cost of streaming inside a run.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loading", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048, help="images per format (default 2048: 8 batches of 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs / steps per case (median)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps of the streamed-training case")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the main process (default 2)")
    parser.add_argument("--folder", default="/tmp/tripletnet-loading-benchmark", help="where the synthetic images go")
    parser.add_argument("--output", default=str(HERE / "RESULTS-loading.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = dt.datetime.now(dt.timezone.utc)
    load_start = os.getloadavg()

    folders = {}
    for suffix in FORMATS:
        log(f"writing {args.images} {suffix} files under {args.folder}/{suffix}")
        folders[suffix] = write_folder(Path(args.folder) / suffix, args.images, suffix)
    # The step does not depend on the file format: timed once, on PNG-decoded pixels.
    log("training step")
    step = step_rate(*folders["png"], args.repeats)
    rows, both_rows = [], []
    best: dict[str, tuple[int, float]] = {}  # format -> (workers, images/s) of its fastest loader
    slowest = float("inf")  # images/s of the slowest loading case
    for suffix, (files, labels) in folders.items():
        kib = sum(p.stat().st_size for p in files.paths) / 1024 / len(files)
        rates = {}
        for workers in WORKERS:
            log(f"{suffix}: loading alone, {workers} workers")
            rates[workers] = loading_rate(files, labels, workers, args.repeats)
            rows.append([suffix.upper(), f"{kib:.1f} KiB", workers, fmt(rates[workers], 0),
                         f"{rates[workers] / rates[0]:.2f}x", fmt(step, 0), f"{rates[workers] / step:.1f}x"])
        best[suffix] = max(rates.items(), key=lambda item: item[1])
        slowest = min(slowest, *rates.values())
    for workers in (0, 2):  # PNG: the slower of the two to decode here
        log(f"png: streamed training, {workers} workers")
        both = streamed_training_rate(*folders["png"], workers, args.steps)
        both_rows.append(["PNG", workers, fmt(both, 0), fmt(step, 0), f"{both / step:.2f}x"])

    text = "\n\n".join([
        "# Loading 64x64 RGB images from disk against the training step",
        "\n".join([
            f"- **Date**: {started.isoformat(timespec='seconds')}",
            *describe(args.threads),
            f"- **Command**: `PYTHONPATH=src python -m benchmarks.loading --images {args.images} --repeats {args.repeats} "
            f"--steps {args.steps} --threads {args.threads}`",
            f"- **Load average** before: {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}, after: {load_note()}. "
            "The machine is shared with other jobs: absolute figures are pessimistic and noisy; read the ratios, "
            "measured side by side in one process.",
        ]),
        f"## Loading alone against the training step (batch {BATCH}, network conv3, fp32, {args.threads} torch threads)",
        f"Loading: whole epochs of `StreamedBatches` ({args.images // BATCH} batches, worker start-up included), "
        f"median of {args.repeats} after one warm-up epoch, files in the page cache. Step: `train_step` with the default "
        f"augmentation and semi-hard mining on a batch held in memory, median of {args.repeats} after one warm-up "
        "(one measurement, repeated on every row). `loading / step`: how many times faster the loader delivers "
        "images than the step consumes them (above 1: compute is the bottleneck).",
        table(["format", "file size", "workers", "loading images/s", "vs 0 workers", "step images/s",
               "loading / step"], rows),
        f"## Streamed training: loading and steps together ({args.steps} steps after the first)",
        table(["format", "workers", "training images/s", "step alone images/s", "vs step alone"], both_rows),
        "## Verdict",
        verdict(best, slowest, step),
    ]) + "\n"
    Path(args.output).write_text(text)
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""Section 2: what mining costs inside one default training step at batch 256.

One subprocess builds the default configuration's network and optimiser and times, side by side:
the whole step (``tripletnet.training.train_step``: augmentation, forward in the resolved precision, distances, mining,
loss, backward, Adam), the miner alone on that step's distance matrix, and the triplet part alone
(``triplet_step`` + its backward: distances, mining, loss). Run one miner alone with
``python -m benchmarks.step --miner semihard``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tripletnet.mining import miner_names

from .common import Settings, fmt, load_note, log, table
from .timing import CaseResult, measure, run_subprocess, run_worker

MINERS = miner_names()
TIMEOUT_SECONDS = 300.0


def worker(miner: str, repeats: int) -> dict[str, Any]:
    import torch

    from tripletnet.config import TrainConfig
    from tripletnet.distances import pairwise_distances
    from tripletnet.mining import get_miner
    from tripletnet.models import build_network, images_to_input
    from tripletnet.training import train_step, triplet_step
    from tripletnet.training.loop import resolve_precision

    from .synthetic import balanced_labels

    # The defaults as `tripletnet train` resolves them on this machine (precision auto: bf16 only
    # where the CPU computes it natively, else fp32).
    config = resolve_precision(TrainConfig(), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    # Random pixels cost the network what digits do; mining sees the network's real embeddings.
    images = torch.randint(0, 256, (config.batch_size, 28, 28), dtype=torch.uint8, generator=gen)
    labels = balanced_labels(config.batch_size)
    model = build_network(config.network, config.embedding_dim).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    step = measure(lambda: train_step(model, optimizer, images, labels, miner, config, gen), repeats, warmup=3)
    with torch.no_grad():
        embeddings = model(images_to_input(images)).float()
    dist = pairwise_distances(embeddings)
    # A miner whose loss comes from counts (batch-all) never lists its triplets in a step: its "mining" is the counting.
    spec = get_miner(miner)
    mine = spec.count if spec.loss_form == "counts" and spec.count is not None else spec.mine
    mining = measure(lambda: mine(dist, labels, config.margin), repeats * 3, warmup=3)
    leaf = embeddings.clone().requires_grad_(True)

    def triplet_part() -> None:
        leaf.grad = None
        triplet_step(leaf, labels, miner, config.margin)[0].backward()

    triplet = measure(triplet_part, repeats * 3, warmup=3)
    return {
        "network": config.network, "precision": config.precision, "augment": config.augment,
        "batch": config.batch_size, "repeats": step.repeats,
        "step_ms": step.median * 1e3, "mining_ms": mining.median * 1e3, "triplet_ms": triplet.median * 1e3,
    }


def run(settings: Settings) -> str:
    repeats = 10 if settings.quick else 60
    load_start = load_note()
    results: dict[str, CaseResult] = {}
    for miner in MINERS:
        log(f"step: {miner}")
        results[miner] = run_subprocess(
            [
                sys.executable, "-m", "benchmarks.step", "--miner", miner,
                "--repeats", str(repeats), "--threads", str(settings.threads),
            ],
            TIMEOUT_SECONDS, settings.threads,
        )
    rows = []
    for miner, r in results.items():
        if not r.ok:
            rows.append([miner, f"could not run: {r.error}", "", "", "", ""])
            continue
        d = r.data
        rows.append([
            miner, f"{d['step_ms']:.1f} (n={d['repeats']})", fmt(d["mining_ms"], 2), fmt(d["triplet_ms"], 2),
            f"{100 * d['mining_ms'] / d['step_ms']:.1f}%", f"{100 * d['triplet_ms'] / d['step_ms']:.1f}%",
        ])
    some = next((r.data for r in results.values() if r.ok), None)
    setting = (
        f"network {some['network']}, precision {some['precision']}, augmentation {'on' if some['augment'] else 'off'}, "
        f"batch {some['batch']}" if some else "the defaults"
    )
    return "\n\n".join([
        "## 2. Mining's share of a default training step",
        "`tripletnet.training.train_step` with `TrainConfig()`, precision auto resolved for this machine "
        f"({setting}; margin 1.0) on 256 random 28x28 "
        "images, labels i % 10, torch threads as above. *Mining* is the miner alone on that step's (256, 256) "
        "distance matrix (for a miner whose loss form is counts, batch_all, its count function `count_batch_all`, "
        "which is what its step runs); *triplet part* is "
        "`triplet_step` + its backward on the network's embeddings (distances, mining, loss). Each miner is one "
        "subprocess; all three timings are medians measured in it, the step's over n steps after 3 warm-ups, "
        "the others over 3n calls.",
        table(
            ["miner", "whole step ms (median, n)", "mining ms", "triplet part ms", "mining / step", "triplet part / step"], rows,
        ),
        f"Load average at section start: {load_start}; at end: {load_note()}.",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Time mining inside a default training step (worker for `python -m benchmarks`).",
    )
    parser.add_argument("--miner", choices=MINERS, required=True)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    a = parser.parse_args(argv)
    run_worker(lambda: worker(a.miner, a.repeats), threads=a.threads)


if __name__ == "__main__":
    main()

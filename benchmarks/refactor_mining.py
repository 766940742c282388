"""Mining speed before and after the issue-7 refactor, side by side in one run.

Each round runs one subprocess per source tree (old, new), alternating which goes first; every
subprocess times every case on the same seeded inputs (one torch thread): the miner alone on a
(B, B) distance matrix (batch-all: ``count_batch_all``, what its training step runs), and
``triplet_step`` + backward. The table gives, per case, the median over rounds of each
subprocess's median. Run it with

    python -m benchmarks.refactor_mining --old /path/to/old/checkout --new . --rounds 5

``--old``/``--new`` are source trees (their ``src/`` goes first on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

MINERS = ("semihard", "hard", "batch_all")
BATCHES = (256, 1024)
MARGIN = 1.0
PREFIX = "REFACTOR-MINING "


def worker(repeats_256: int, repeats_1024: int) -> dict[str, float]:
    """Time every case in this process; works against the old (mining.py) and the new (mining/) layout."""
    import torch

    from benchmarks.synthetic import balanced_labels, random_unit_embeddings
    from benchmarks.timing import measure
    from tripletnet import mining
    from tripletnet.distances import pairwise_distances

    try:
        from tripletnet.training import triplet_step
    except ImportError:  # the old layout
        from tripletnet.losses import triplet_step

    torch.set_num_threads(1)

    def miner_function(name: str):  # type: ignore[no-untyped-def]
        if name == "batch_all":
            return mining.count_batch_all
        entry = mining.MINERS[name]
        return getattr(entry, "mine", entry)  # new: a MinerSpec; old: the function

    out: dict[str, float] = {}
    for batch in BATCHES:
        repeats = repeats_256 if batch == 256 else repeats_1024
        embeddings = random_unit_embeddings(batch, 64)
        labels = balanced_labels(batch)
        dist = pairwise_distances(embeddings)
        leaf = embeddings.clone().requires_grad_(True)
        for name in MINERS:
            mine = miner_function(name)
            out[f"mine {name} {batch}"] = measure(
                lambda mine=mine, dist=dist, labels=labels: mine(dist, labels, MARGIN), repeats, warmup=2,
            ).median

            def step(leaf=leaf, labels=labels, name=name) -> None:  # type: ignore[no-untyped-def]
                leaf.grad = None
                triplet_step(leaf, labels, name, MARGIN)[0].backward()

            out[f"step {name} {batch}"] = measure(step, repeats, warmup=2).median
    return out


def _run(tree: Path, repeats_256: int, repeats_1024: int) -> dict[str, float]:
    bench_root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{bench_root}", "OMP_NUM_THREADS": "1"}
    code = (
        "import json, benchmarks.refactor_mining as m; "
        f"print({PREFIX!r} + json.dumps(m.worker({repeats_256}, {repeats_1024})))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith(PREFIX))
    return json.loads(line[len(PREFIX):])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, default=Path("."))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats-256", type=int, default=30)
    parser.add_argument("--repeats-1024", type=int, default=8)
    a = parser.parse_args(argv)
    samples: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for round_ in range(a.rounds):
        order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
        for which in order:
            result = _run((a.old if which == "old" else a.new).resolve(), a.repeats_256, a.repeats_1024)
            for case, seconds in result.items():
                samples[which].setdefault(case, []).append(seconds)
        print(f"round {round_ + 1}/{a.rounds} done", file=sys.stderr, flush=True)
    print("| case | batch | old ms | new ms | new / old |")
    print("|---|---|---|---|---|")
    for case in samples["old"]:
        what, name, batch = case.split()
        old = statistics.median(samples["old"][case]) * 1e3
        new = statistics.median(samples["new"][case]) * 1e3
        label = f"{'miner alone' if what == 'mine' else 'triplet_step + backward'}: {name}"
        print(f"| {label} | {batch} | {old:.2f} | {new:.2f} | {new / old:.3f} |")


if __name__ == "__main__":
    main()

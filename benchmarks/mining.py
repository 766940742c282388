"""Section 1: mining + triplet loss, forward and backward, per training step.

Ours: ``tripletnet.training.triplet_step`` for every registered miner. PML: the miner with the same
definition (``TripletMarginMiner`` semihard / all, ``BatchHardMiner`` for batch-hard) + ``TripletMarginLoss``.
Both get the same seeded 64-d unit embeddings (a leaf tensor with requires_grad) and P x K labels
over 10 classes. Each (implementation, miner, batch) case runs in a fresh subprocess, so its peak
RSS increase is its own; run it alone with
``python -m benchmarks.mining --impl ours --miner semihard --batch 256``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from tripletnet.mining import miner_names

from .common import Settings, fmt, load_note, log, ratio, table
from .timing import CaseResult, measure, peak_rss_mib, run_subprocess, run_worker

MINERS = miner_names()
# PML's closest counterpart of each of our miners, as the report names it (a miner without one is timed
# on our side only). Batch-hard's is BatchHardMiner, the same definition; TripletMarginMiner's "hard" is
# a different one (every triplet with d(a,n) < d(a,p)), so it is not compared.
PML_MINERS = {
    "semihard": 'TripletMarginMiner(type_of_triplets="semihard")',
    "hard": "BatchHardMiner()",
    "batch_all": 'TripletMarginMiner(type_of_triplets="all")',
}
MARGIN = 1.0
DIM = 64
TIMEOUT_SECONDS = 120.0


def _step_ours(miner: str) -> Callable[[Any, Any], tuple[Any, int]]:
    from tripletnet.training import triplet_step

    def step(embeddings: Any, labels: Any) -> tuple[Any, int]:
        loss, stats = triplet_step(embeddings, labels, miner, MARGIN)
        loss.backward()
        return loss, stats.num_triplets

    return step


def _step_pml(miner: str) -> Callable[[Any, Any], tuple[Any, int]]:
    # Imported only here: pytorch-metric-learning is a benchmark/test dependency, not tripletnet's.
    from pytorch_metric_learning import losses, miners

    pml_miner = (
        miners.BatchHardMiner() if miner == "hard"
        else miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="all" if miner == "batch_all" else miner)
    )
    loss_fn = losses.TripletMarginLoss(margin=MARGIN)

    def step(embeddings: Any, labels: Any) -> tuple[Any, int]:
        triplets = pml_miner(embeddings, labels)
        loss = loss_fn(embeddings, labels, triplets)
        loss.backward()
        return loss, len(triplets[0])

    return step


def worker(impl: str, miner: str, batch: int, repeats: int, budget: float) -> dict[str, Any]:
    """Time one case in this process and return its figures."""
    from .synthetic import balanced_labels, random_unit_embeddings

    embeddings = random_unit_embeddings(batch, DIM).requires_grad_(True)
    labels = balanced_labels(batch)
    step = (_step_ours if impl == "ours" else _step_pml)(miner)
    baseline = peak_rss_mib()  # after imports and inputs: what remains is the step's own memory
    outcome: dict[str, Any] = {}

    def once() -> None:
        embeddings.grad = None
        loss, count = step(embeddings, labels)
        outcome.update(loss=loss.item(), triplets=count)

    timing = measure(once, repeats, warmup=1, budget_seconds=budget)
    return {
        "median_ms": timing.median * 1e3,
        "repeats": timing.repeats,
        "peak_rss_increase_mib": peak_rss_mib() - baseline,
        **outcome,
    }


def _repeats(batch: int, quick: bool) -> int:
    if quick:
        return 3
    return {256: 30, 1024: 15}.get(batch, 7)


def run(settings: Settings) -> str:
    batches = settings.mining_batches or ((256,) if settings.quick else (256, 1024, 4096))
    budget = 10.0 if settings.quick else 60.0
    results: dict[tuple[str, str, int], CaseResult] = {}
    load_start = load_note()
    for batch in batches:
        for miner in MINERS:
            for impl in ("ours", "pml") if miner in PML_MINERS else ("ours",):  # back to back: both see the same machine state
                log(f"mining: {impl} {miner} batch {batch}")
                args = [
                    sys.executable, "-m", "benchmarks.mining", "--impl", impl, "--miner", miner, "--batch", str(batch),
                    "--repeats", str(_repeats(batch, settings.quick)), "--budget", str(budget),
                    "--threads", str(settings.threads), "--memory-cap-gib", str(settings.memory_cap_gib),
                ]
                results[impl, miner, batch] = run_subprocess(args, TIMEOUT_SECONDS, settings.threads)

    def cell_ms(r: CaseResult) -> str:
        return f"{r.data['median_ms']:.2f} (n={r.data['repeats']})" if r.ok else f"could not run: {r.error}"

    def cell(r: CaseResult, key: str, digits: int = 0) -> str:
        return fmt(r.data[key], digits) if r.ok else "—"

    rows = []
    for batch in batches:
        for miner in MINERS:
            ours = results["ours", miner, batch]
            pml = results.get(("pml", miner, batch), CaseResult(error="no PML counterpart"))
            rows.append([
                batch, f"{miner} / `{PML_MINERS.get(miner, '-')}`", cell_ms(ours), cell_ms(pml),
                ratio(pml.data.get("median_ms"), ours.data.get("median_ms")),
                cell(ours, "triplets"), cell(pml, "triplets"),
                cell(ours, "peak_rss_increase_mib"), cell(pml, "peak_rss_increase_mib"),
            ])
    headers = [
        "batch", "miner (ours / PML)", "ours ms (median, n)", "PML ms (median, n)", "PML / ours",
        "ours triplets", "PML triplets", "ours peak RSS +MiB", "PML peak RSS +MiB",
    ]
    return "\n\n".join([
        "## 1. Mining + triplet loss per step (forward + backward)",
        f"64-d L2-normalised random embeddings (leaf tensor, requires_grad), labels i % 10 (10 classes, "
        f"P x K), margin {MARGIN}. Ours: `tripletnet.training.triplet_step(embeddings, labels, miner, margin)` + "
        "`loss.backward()`. PML: the miner named in the row (`TripletMarginMiner` with margin=1.0, or "
        "`BatchHardMiner`) + `losses.TripletMarginLoss(margin=1.0)` + `loss.backward()`, on identical inputs. One fresh "
        f"subprocess per cell (timeout {TIMEOUT_SECONDS:.0f} s, address space capped at {settings.memory_cap_gib:g} GiB "
        "so a runaway case fails cleanly instead of swamping the shared machine); one untimed warm-up step, "
        f"then the median of n timed steps (n lower when a {budget:.0f} s budget ran out). Peak RSS +MiB is "
        "`ru_maxrss` at the end minus `ru_maxrss` after imports and inputs.",
        table(headers, rows),
        "**The miners are not all the same work, so read the ratios with the triplet counts:**\n\n"
        "- *semihard*: ours takes one triplet per anchor-positive pair (FaceNet's closest negative farther "
        "than the positive, with a fallback); PML's `semihard` keeps every triplet with "
        "0 < d(a,n) - d(a,p) <= margin, after building every valid triplet of the batch.\n"
        "- *hard*: ours is **batch-hard** (Hermans et al.: per anchor, its farthest positive and closest "
        "negative, one triplet per anchor), and so is PML's `BatchHardMiner`: the same definition, the same "
        "triplet count (tests/test_miners_vs_pml.py checks the triplets and the loss agree). "
        "PML's `TripletMarginMiner(type_of_triplets=\"hard\")` is a different definition (**every** triplet "
        "with d(a,n) < d(a,p)), so it is not compared here.\n"
        "- *batch_all / all*: the same definition on both sides (every valid triplet with positive loss; "
        "PML's `all` keeps d(a,n) - d(a,p) <= margin), so this row is the like-for-like comparison.\n"
        "- With random embeddings almost every one of the B x (B/10 - 1) x (9B/10) valid triplets "
        "is active, so a method that materialises all triplets needs ~24 bytes x that count: "
        "~2.3 GB at B = 1024 and ~150 GB at B = 4096. Ours never lists batch-all's triplets: its loss "
        "and gradient come from per-pair counts (`tripletnet.mining.count_batch_all`, O(B^2) memory), "
        "and its triplet column counts them.",
        f"Load average at section start: {load_start}; at end: {load_note()}.",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time one mining + loss case (worker for `python -m benchmarks`).")
    parser.add_argument("--impl", choices=("ours", "pml"), required=True)
    parser.add_argument("--miner", choices=MINERS, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed steps at most (roughly)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-cap-gib", type=float, default=12.0)
    a = parser.parse_args(argv)
    run_worker(lambda: worker(a.impl, a.miner, a.batch, a.repeats, a.budget), threads=a.threads, memory_cap_gib=a.memory_cap_gib)


if __name__ == "__main__":
    main()

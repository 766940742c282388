"""Section 3: exact all-pairs verification, ours vs materialising every distance for sklearn.

Ours: ``tripletnet.evaluation.all_pairs(embeddings, labels, far=1e-3)``, which streams blocks of
distances. Baseline: every pairwise distance with torch, then ``sklearn.metrics.roc_curve``.
Embeddings are 64-d unit vectors clustered around one centre per class (10 classes), like a
trained network's. Each case runs in its own subprocess for its peak RSS; run one alone with
``python -m benchmarks.allpairs --impl ours --n 10000``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from .common import Settings, fmt, load_note, log, ratio, table
from .timing import CaseResult, measure, peak_rss_mib, run_subprocess, run_worker

FAR = 1e-3
NOISE = 0.15  # per-coordinate scatter around the class centres: VAL@1e-3 ~ 0.7, not saturated


def _inputs(n: int) -> tuple[Any, Any]:
    from .synthetic import balanced_labels, clustered_embeddings

    labels = balanced_labels(n)
    return clustered_embeddings(labels, noise=NOISE), labels


def worker_ours(n: int, repeats: int, warmup: int, budget: float) -> dict[str, Any]:
    from tripletnet.evaluation import all_pairs

    embeddings, labels = _inputs(n)
    baseline = peak_rss_mib()
    results: list[Any] = []
    timing = measure(lambda: results.append(all_pairs(embeddings, labels, far=FAR)), repeats, warmup, budget)
    result = results[-1]
    return {
        "median_s": timing.median, "repeats": timing.repeats, "peak_rss_increase_mib": peak_rss_mib() - baseline,
        "pairs": result.n_pairs, "val": result.val, "threshold": result.threshold, "auc": result.auc,
    }


def worker_sklearn(n: int, repeats: int, warmup: int, budget: float) -> dict[str, Any]:
    import numpy as np
    import torch
    from sklearn.metrics import roc_curve

    embeddings, labels = _inputs(n)
    baseline = peak_rss_mib()
    stages: dict[str, list[float]] = {"distances": [], "roc_curve": []}
    outcome: dict[str, Any] = {}

    def once() -> None:
        started = time.perf_counter()
        with torch.no_grad():
            upper = torch.ones(n, n, dtype=torch.bool).triu_(1)  # each unordered pair once
            distances = torch.cdist(embeddings, embeddings)[upper].numpy()
            same = (labels[:, None] == labels[None, :])[upper].numpy()
        middle = time.perf_counter()
        fpr, tpr, _ = roc_curve(same, -distances)  # higher score = more alike
        stages["distances"].append(middle - started)
        stages["roc_curve"].append(time.perf_counter() - middle)
        outcome.update(pairs=int(len(distances)), val=float(tpr[np.searchsorted(fpr, FAR, side="right") - 1]))

    timing = measure(once, repeats, warmup, budget)
    timed = slice(warmup, None)  # the stage lists include the warm-up calls
    return {
        "median_s": timing.median, "repeats": timing.repeats, "peak_rss_increase_mib": peak_rss_mib() - baseline,
        "distances_median_s": statistics.median(stages["distances"][timed]),
        "roc_curve_median_s": statistics.median(stages["roc_curve"][timed]),
        **outcome,
    }


def run(settings: Settings) -> str:
    small = 5000 if settings.quick else 10000
    plans = [  # (impl, n, repeats, warm-up, budget s, timeout s)
        ("ours", small, 3 if settings.quick else 7, 1, 20.0 if settings.quick else 90.0, 300.0),
        ("sklearn", small, 2 if settings.quick else 5, 1, 20.0 if settings.quick else 90.0, 300.0),
    ]
    large = settings.allpairs_70k and not settings.quick
    if large:
        # One pass at 70k is minutes long: no warm-up (it would double the cost for nothing measurable).
        plans.append(("ours", 70000, 3, 0, 600.0, 1800.0))
    load_start = load_note()
    results: dict[tuple[str, int], CaseResult] = {}
    for impl, n, repeats, warmup, budget, timeout in plans:
        log(f"all-pairs: {impl} N={n}")
        args = [
            sys.executable, "-m", "benchmarks.allpairs", "--impl", impl, "--n", str(n), "--repeats", str(repeats),
            "--warmup", str(warmup), "--budget", str(budget), "--threads", str(settings.threads),
            "--memory-cap-gib", str(settings.memory_cap_gib),
        ]
        results[impl, n] = run_subprocess(args, timeout, settings.threads)

    def row(impl: str, n: int, label: str) -> list[str]:
        r = results.get((impl, n))
        if r is None:
            return [label, f"{n:,}", "not run", "", "", "", ""]
        if not r.ok:
            return [label, f"{n:,}", f"could not run: {r.error}", "", "", "", ""]
        d = r.data
        detail = (
            f"distances {d['distances_median_s']:.2f} s + roc_curve {d['roc_curve_median_s']:.2f} s"
            if impl == "sklearn" else f"threshold {d['threshold']:.4f}, AUC {d['auc']:.5f}"
        )
        return [
            label, f"{n:,}", f"{d['median_s']:.2f} (n={d['repeats']})", f"{d['pairs']:,}",
            fmt(d["peak_rss_increase_mib"], 0), f"{d['val']:.4f}", detail,
        ]

    rows = [row("ours", small, "ours `all_pairs`"), row("sklearn", small, "torch distances + sklearn `roc_curve`")]
    if not settings.quick:
        rows.append(row("ours", 70000, "ours `all_pairs`" + ("" if large else " (not run: --no-allpairs-70k)")))
        pairs_70k = 70000 * 69999 // 2
        rows.append([
            "torch distances + sklearn `roc_curve`", "70,000",
            f"not run: {pairs_70k:.3g} pairs x 8 bytes (float64 inside roc_curve) = "
            f"{pairs_70k * 8 / 1e9:.0f} GB for the scores alone, past this 24 GB machine", "", "", "", "",
        ])
    ours, baseline = results.get(("ours", small)), results.get(("sklearn", small))
    speedup = ratio(baseline.data.get("median_s"), ours.data.get("median_s")) if ours and baseline else "n/a"
    memory = (
        ratio(baseline.data.get("peak_rss_increase_mib"), ours.data.get("peak_rss_increase_mib")) if ours and baseline else "n/a"
    )
    return "\n\n".join([
        "## 4. All-pairs verification evaluation",
        f"64-d unit embeddings clustered around 10 random class centres (noise {NOISE} per coordinate), labels "
        f"i % 10; FAR target {FAR:g}. Ours: `tripletnet.evaluation.all_pairs(embeddings, labels, far=1e-3)`. "
        "Baseline: `torch.cdist` for all N x N distances, the upper triangle gathered (each pair once), then "
        "`sklearn.metrics.roc_curve(same, -distance)`; its VAL is the TPR at the last ROC point with FPR <= "
        "1e-3, a cross-check of ours. Each row is its own subprocess; seconds are the median of n timed "
        "calls after one warm-up (none at 70k); peak RSS +MiB is `ru_maxrss` growth after imports and inputs.",
        table(["method", "N", "seconds (median, n)", "pairs", "peak RSS +MiB", "VAL@FAR=1e-3", "detail"], rows),
        f"At N = {small:,}: baseline / ours time = **{speedup}**, peak RSS increase baseline / ours = **{memory}**.",
        f"Load average at section start: {load_start}; at end: {load_note()}.",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time one all-pairs evaluation case (worker for `python -m benchmarks`).")
    parser.add_argument("--impl", choices=("ours", "sklearn"), required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-cap-gib", type=float, default=12.0)
    a = parser.parse_args(argv)

    work = worker_ours if a.impl == "ours" else worker_sklearn
    run_worker(lambda: work(a.n, a.repeats, a.warmup, a.budget), threads=a.threads, memory_cap_gib=a.memory_cap_gib)


if __name__ == "__main__":
    main()

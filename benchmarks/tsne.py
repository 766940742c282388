"""Section 5: t-SNE of a 10k x 64 embedding: ``tripletnet.tsne.tsne_2d`` (openTSNE) against scikit-learn.

Seconds are the fit alone; the subprocess's wall time and peak RSS are given beside them. Run one
case alone with ``python -m benchmarks.tsne --impl ours --n 10000``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from .common import Settings, fmt, load_note, log, ratio, table
from .timing import CaseResult, peak_rss_mib, run_subprocess, run_worker

NOISE = 0.15  # the same clustered embeddings as the all-pairs section
IMPLS = ("ours", "sklearn")


def _fit_sklearn(x: Any, threads: int) -> float:
    from sklearn.manifold import TSNE

    started = time.perf_counter()
    # The same perplexity and seed as ours; Barnes-Hut is sklearn's default (and its fast) method.
    TSNE(n_components=2, perplexity=30.0, init="pca", random_state=0, n_jobs=threads).fit_transform(x)
    return time.perf_counter() - started


def worker(impl: str, n: int, repeats: int, threads: int) -> dict[str, Any]:
    from tripletnet.tsne import tsne_2d

    from .synthetic import balanced_labels, clustered_embeddings

    x = clustered_embeddings(balanced_labels(n), noise=NOISE).numpy().astype("float64")
    baseline = peak_rss_mib()
    # No separate warm-up: one fit is tens of seconds, and the first one's extra cost (imports of
    # the compiled parts happen inside the fit) is part of what a user waits for anyway.
    if impl == "ours":
        seconds = [tsne_2d(x, seed=0, n_jobs=threads)[1] for _ in range(repeats)]
    else:
        seconds = [_fit_sklearn(x, threads) for _ in range(repeats)]
    return {
        "median_s": statistics.median(seconds), "repeats": len(seconds), "samples": seconds,
        "peak_rss_increase_mib": peak_rss_mib() - baseline,
    }


def run(settings: Settings) -> str:
    n = 2000 if settings.quick else 10000
    # sklearn's fit takes minutes at 10k: one repeat of it, beside ours' three.
    repeats = {"ours": 1 if settings.quick else 3, "sklearn": 1}
    load_start = load_note()
    results: dict[str, CaseResult] = {}
    for impl in IMPLS:
        log(f"t-SNE: {impl}, N={n}, {repeats[impl]} repeat(s)")
        args = [
            sys.executable, "-m", "benchmarks.tsne", "--impl", impl, "--n", str(n), "--repeats", str(repeats[impl]),
            "--threads", str(settings.threads), "--memory-cap-gib", str(settings.memory_cap_gib),
        ]
        results[impl] = run_subprocess(args, 900.0, settings.threads)
    names = {"ours": "ours: `tsne_2d` (openTSNE, FFT gradients)", "sklearn": "`sklearn.manifold.TSNE` (Barnes-Hut)"}
    rows = []
    for impl, r in results.items():
        if r.ok:
            samples = ", ".join(f"{s:.1f}" for s in r.data["samples"])
            rows.append([names[impl], f"{n:,} x 64", f"{r.data['median_s']:.1f} (n={r.data['repeats']}: {samples})",
                         fmt(r.wall_seconds, 1), fmt(r.data["peak_rss_increase_mib"], 0)])
        else:
            rows.append([names[impl], f"{n:,} x 64", f"could not run: {r.error}", fmt(r.wall_seconds, 1), ""])
    speedup = ratio(results["sklearn"].data.get("median_s"), results["ours"].data.get("median_s"))
    return "\n\n".join([
        "## 5. t-SNE",
        f"64-d unit embeddings clustered around 10 class centres; both with perplexity 30, seed 0 and "
        f"{settings.threads} threads (`tsne_2d(x, n_jobs={settings.threads})`: openTSNE with its default 750 "
        "iterations; scikit-learn with its defaults: Barnes-Hut, PCA initialisation, 1000 iterations). Seconds are "
        "the fit alone; the whole subprocess (imports, inputs, all repeats) is beside them.",
        table(["method", "input", "fit seconds (median, n: samples)", "whole subprocess s", "peak RSS +MiB"], rows),
        f"scikit-learn / ours fit time: **{speedup}**.",
        f"Load average at section start: {load_start}; at end: {load_note()}.",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time t-SNE on synthetic embeddings (worker for `python -m benchmarks`).")
    parser.add_argument("--impl", choices=IMPLS, default="ours")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-cap-gib", type=float, default=12.0)
    a = parser.parse_args(argv)
    run_worker(lambda: worker(a.impl, a.n, a.repeats, a.threads), threads=a.threads, memory_cap_gib=a.memory_cap_gib)


if __name__ == "__main__":
    main()

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
# openTSNE, which tsne_2d runs, does 250 early-exaggeration iterations then 500 more; scikit-learn's
# default is 1,000 in all (250 of them exaggerated), so it is given openTSNE's total: equal work.
ITERATIONS = 750


def _fit_sklearn(x: Any, threads: int) -> tuple[float, int]:
    from sklearn.manifold import TSNE

    started = time.perf_counter()
    # The same perplexity, seed and iterations as ours; Barnes-Hut is sklearn's default (and its fast) method.
    tsne = TSNE(n_components=2, perplexity=30.0, init="pca", random_state=0, n_jobs=threads, max_iter=ITERATIONS)
    tsne.fit_transform(x)
    # It may stop early (no progress for 300 iterations): the report says how many it ran.
    return time.perf_counter() - started, int(tsne.n_iter_) + 1


def worker(impl: str, n: int, repeats: int, threads: int) -> dict[str, Any]:
    from tripletnet.tsne import tsne_2d

    from .synthetic import balanced_labels, clustered_embeddings

    x = clustered_embeddings(balanced_labels(n), noise=NOISE).numpy().astype("float64")
    baseline = peak_rss_mib()
    # No separate warm-up: one fit is tens of seconds, and the first one's extra cost (imports of
    # the compiled parts happen inside the fit) is part of what a user waits for anyway.
    if impl == "ours":
        seconds = [tsne_2d(x, seed=0, n_jobs=threads)[1] for _ in range(repeats)]
        iterations = ITERATIONS  # openTSNE runs its schedule to the end
    else:
        fits = [_fit_sklearn(x, threads) for _ in range(repeats)]
        seconds, iterations = [s for s, _ in fits], fits[0][1]
    return {
        "median_s": statistics.median(seconds), "repeats": len(seconds), "samples": seconds, "iterations": iterations,
        "peak_rss_increase_mib": peak_rss_mib() - baseline,
    }


def run(settings: Settings) -> str:
    n = settings.tsne_n or (2000 if settings.quick else 10000)
    repeats = dict.fromkeys(IMPLS, 1 if settings.quick else 3)
    load_start = load_note()
    results: dict[str, CaseResult] = {}
    for impl in IMPLS:  # back to back, each in its own subprocess, so both see the same machine state
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
            rows.append([names[impl], f"{n:,} x 64", f"{r.data['iterations']:,}",
                         f"{r.data['median_s']:.1f} (n={r.data['repeats']}: {samples})",
                         fmt(r.wall_seconds, 1), fmt(r.data["peak_rss_increase_mib"], 0)])
        else:
            rows.append([names[impl], f"{n:,} x 64", "", f"could not run: {r.error}", fmt(r.wall_seconds, 1), ""])
    speedup = ratio(results["sklearn"].data.get("median_s"), results["ours"].data.get("median_s"))
    return "\n\n".join([
        "## 5. t-SNE",
        f"64-d unit embeddings clustered around 10 class centres; both with perplexity 30, seed 0 and "
        f"{settings.threads} threads and the same number of iterations, {ITERATIONS} (`tsne_2d(x, n_jobs={settings.threads})`: "
        "openTSNE's default 250 early-exaggeration + 500 iterations, FFT gradients; scikit-learn: Barnes-Hut, PCA "
        f"initialisation, `max_iter={ITERATIONS}` instead of its default 1,000, of which 250 exaggerated as well). "
        "Both are fitted n times in one subprocess each, back to back; seconds are the fit alone, median and samples; "
        "the whole subprocess (imports, inputs, all repeats) is beside them. The iterations column is what each ran "
        "(scikit-learn stops early when it makes no progress).",
        table(["method", "input", "iterations", "fit seconds (median, n: samples)", "whole subprocess s", "peak RSS +MiB"], rows),
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

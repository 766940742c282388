"""Section 4: t-SNE of a 10k x 64 embedding with ``tripletnet.tsne.tsne_2d``.

Seconds are the ones ``tsne_2d`` reports (the fit alone); the subprocess's wall time and peak RSS
are given beside them. Run one case alone with ``python -m benchmarks.tsne --n 10000``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from .common import Settings, fmt, load_note, log, table
from .timing import cap_address_space, peak_rss_mib, run_subprocess, run_worker, set_threads

NOISE = 0.15  # the same clustered embeddings as the all-pairs section


def worker(n: int, repeats: int, threads: int) -> dict[str, Any]:
    from tripletnet.tsne import tsne_2d

    from .synthetic import balanced_labels, clustered_embeddings

    x = clustered_embeddings(balanced_labels(n), noise=NOISE).numpy()
    baseline = peak_rss_mib()
    # No separate warm-up: one fit is tens of seconds, and the first one's extra cost (imports of
    # openTSNE's compiled parts happen inside tsne_2d) is part of what a user waits for anyway.
    seconds = [tsne_2d(x, seed=0, n_jobs=threads)[1] for _ in range(repeats)]
    return {
        "median_s": statistics.median(seconds), "repeats": len(seconds), "samples": seconds,
        "peak_rss_increase_mib": peak_rss_mib() - baseline,
    }


def run(settings: Settings) -> str:
    n = 2000 if settings.quick else 10000
    repeats = 1 if settings.quick else 3
    load_start = load_note()
    log(f"t-SNE: N={n}, {repeats} repeat(s)")
    args = [
        sys.executable, "-m", "benchmarks.tsne", "--n", str(n), "--repeats", str(repeats),
        "--threads", str(settings.threads), "--memory-cap-gib", str(settings.memory_cap_gib),
    ]
    r = run_subprocess(args, 600.0, settings.threads)
    if r.ok:
        samples = ", ".join(f"{s:.1f}" for s in r.data["samples"])
        row = [f"{n:,} x 64", f"{r.data['median_s']:.1f} (n={r.data['repeats']}: {samples})",
               fmt(r.wall_seconds, 1), fmt(r.data["peak_rss_increase_mib"], 0)]
    else:
        row = [f"{n:,} x 64", f"could not run: {r.error}", fmt(r.wall_seconds, 1), ""]
    return "\n\n".join([
        "## 5. t-SNE",
        f"`tripletnet.tsne.tsne_2d(x, n_jobs={settings.threads})` (openTSNE, FFT gradients, default iterations) on "
        f"64-d unit embeddings clustered around 10 class centres. Seconds are those `tsne_2d` returns (the fit); "
        "the whole subprocess (imports, inputs, all repeats) is beside them.",
        table(["input", "fit seconds (median, n: samples)", "whole subprocess s", "peak RSS +MiB"], [row]),
        f"Load average at section start: {load_start}; at end: {load_note()}.",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time t-SNE on synthetic embeddings (worker for `python -m benchmarks`).")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-cap-gib", type=float, default=12.0)
    a = parser.parse_args(argv)

    def body() -> dict[str, Any]:
        cap_address_space(a.memory_cap_gib)
        set_threads(a.threads)
        return worker(a.n, a.repeats, a.threads)

    run_worker(body)


if __name__ == "__main__":
    main()

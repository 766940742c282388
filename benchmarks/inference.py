"""Inference benchmarks: embedding throughput (eager vs onnxruntime), faiss exact vs IVF-Flat and HNSW search, verify end to end.

    python -m benchmarks.inference [--checkpoint C] [--gallery 1000000] [--data random clustered] [--hnsw 32:80]
                                   [--ivf 1024,4096] [--cache DIR] [--search-only] [--threads 1]
                                   [--output benchmarks/RESULTS-inference.md]

Measurement only (medians of repeats after a warm-up); nothing asserts on time. Without
``--checkpoint`` an untrained default network is used: throughput does not depend on the weights.
Search: exact queries/s both with all queries in one call and one query per call; every approximate
index's recall@1 against exact, its sweep (nprobe or efSearch) stopping at recall 0.999. One thread by
default: the machine is shared, and a 1,000,000-vector HNSW build takes tens of minutes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import REPO_ROOT, fmt, load_note, log, table
from .timing import measure, thread_env


def _checkpoint(given: str | None, workdir: Path) -> Path:
    if given:
        return Path(given)
    from tripletnet.config import TrainConfig
    from tripletnet.models import build_network
    from tripletnet.training.checkpoint import save_checkpoint

    config = TrainConfig()
    path = workdir / "untrained.pt"
    save_checkpoint(path, {
        "epoch": 0,
        "config": config.to_dict(),
        "model": build_network(config.network, config.embedding_dim).state_dict(),
    })
    return path


def embedding_throughput(checkpoint: Path, threads: int, workdir: Path) -> str:
    import onnxruntime

    from tripletnet.inference import load_model
    from tripletnet.inference.export import INPUT_NAME, Uint8Embedder, export_model

    model = load_model(checkpoint, log=lambda _: None)
    embedder = Uint8Embedder(model.network).eval()
    onnx_path = export_model(model, workdir / "model.onnx", "onnx", log=lambda _: None)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    rows = []
    for batch in (1, 256):
        images = torch.randint(0, 256, (batch, *model.input_shape), dtype=torch.uint8)
        repeats = 200 if batch == 1 else 20
        feed = {INPUT_NAME: images.numpy()}
        with torch.no_grad():
            eager = measure(lambda images=images: embedder(images), repeats=repeats, warmup=3)
        ort = measure(lambda feed=feed: session.run(None, feed), repeats=repeats, warmup=3)
        rows.append([batch, fmt(batch / eager.median, 0), fmt(batch / ort.median, 0), f"{eager.median / ort.median:.2f}x",
                     f"{eager.repeats} / {ort.repeats}"])
        log(f"throughput batch {batch}: eager {batch / eager.median:,.0f}/s, onnxruntime {batch / ort.median:,.0f}/s")
    return "\n".join([
        f"## Embedding throughput (network {model.config.network}, "
        f"uint8 {' x '.join(map(str, model.input_shape))} in, {threads} threads)",
        "",
        table(["batch", "PyTorch eager images/s", "onnxruntime images/s", "onnxruntime / eager", "repeats"], rows),
        "",
        ("Both take uint8 images and scale them inside the graph (`tripletnet.inference.export.Uint8Embedder`); "
         "onnxruntime runs the file `tripletnet export --format onnx` writes."),
    ])


HNSW_EF_SEARCH = (32, 64, 128, 256, 512, 1024, 2048)
IVF_NPROBE = (1, 2, 4, 8, 16, 32, 64, 128, 256)
N_QUERIES = 1000
N_SINGLE = 200  # queries timed one at a time (the exact scan takes ~0.1 s each at 1,000,000)
CLUSTERS = 10_000
CLUSTER_SPREAD = 0.5


def search_data(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A gallery of ``n`` unit 64-d vectors and ``N_QUERIES`` unit queries drawn the same way (not from the gallery).

    ``random``: uniform on the sphere (Gaussian, normalised): no structure, the hard case for approximate search.
    ``clustered``: a mixture of ``CLUSTERS`` isotropic Gaussians around random unit centres, noise of norm about
    ``CLUSTER_SPREAD`` before normalising: class clusters as a trained embedding has them (an assumption, stated).
    """
    rng = np.random.default_rng(seed)

    def draw(count: int) -> np.ndarray:
        vectors = rng.standard_normal((count, 64), dtype=np.float32)
        if kind == "clustered":
            vectors *= np.float32(CLUSTER_SPREAD / 8.0)  # each coordinate sd spread/sqrt(64)
            vectors += centres[rng.integers(0, CLUSTERS, count)]
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    centres = rng.standard_normal((CLUSTERS, 64), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return draw(n), draw(N_QUERIES)


def _timed_queries(index: Any, queries: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Queries/s with all queries in one call, and with one query per call (median), and the batch's top-1."""
    index.search(queries[:20], 1)  # warm-up
    started = time.perf_counter()
    _, found = index.search(queries, 1)
    batched = len(queries) / (time.perf_counter() - started)
    single = measure(lambda: [index.search(queries[i : i + 1], 1) for i in range(0, N_SINGLE, 10)], repeats=10, warmup=0)
    return batched, (N_SINGLE // 10) / single.median, found[:, 0]


def _cached_index(cache: Path | None, name: str, build: Callable[[], Any]) -> tuple[Any, float | None]:
    """Build the index, or read it from ``cache`` (build time then unknown: None)."""
    import faiss

    path = None if cache is None else cache / f"{name}.faiss"
    if path is not None and path.is_file():
        return faiss.read_index(str(path)), None
    started = time.perf_counter()
    index = build()
    seconds = time.perf_counter() - started
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(path))
    return index, seconds


def _index_mib(index: object) -> float:
    """The index's size as faiss serialises it: vectors plus graph links or lists, what it holds in memory.

    (Peak RSS cannot show it: the process already peaked while generating the gallery.)"""
    import faiss

    return faiss.serialize_index(index).nbytes / (1 << 20)


def _parse_pairs(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in item.split(":")) for item in text.split(",") if item]  # type: ignore[misc]


def faiss_search(n: int, threads: int, data: str, hnsw: list[tuple[int, int]], nlists: list[int], cache: Path | None,
                 rows_out: Path | None) -> str:
    """Exact vs HNSW and IVF-Flat on one gallery: build time, size, queries/s (batched and one at a time), recall@1."""
    import faiss

    faiss.omp_set_num_threads(threads)
    gallery, queries = search_data(data, n)
    records: list[dict[str, Any]] = []

    def record(**fields: Any) -> None:
        records.append(fields)
        log(f"{data} {n:,}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()))
        if rows_out is not None:
            rows_out.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")

    exact, exact_build = _cached_index(None, "", lambda: _added(faiss.IndexFlatL2(64), gallery))
    exact_batched, exact_single, truth = _timed_queries(exact, queries)
    record(index="exact (IndexFlatL2)", build_s=exact_build, mib=_index_mib(exact), batched_qps=exact_batched,
           single_qps=exact_single, recall=1.0)
    del exact
    tag = f"{data}-{n}"
    for nlist in nlists:
        def build_ivf(nlist: int = nlist) -> Any:  # as 'tripletnet index --approximate ivf --nlist N' builds it
            from tripletnet.inference.index import GalleryIndex

            return GalleryIndex.build(gallery, fingerprint="benchmark", kind="ivf", nlist=nlist).index

        index, seconds = _cached_index(cache, f"{tag}-ivf{nlist}", build_ivf)
        _sweep(index, [p for p in IVF_NPROBE if p <= nlist], _set_nprobe, f"IVF-Flat nlist={nlist}, nprobe={{}}",
               seconds, queries, truth, record)
        del index
    for m, ef_construction in hnsw:
        def build_hnsw(m: int = m, ef_construction: int = ef_construction) -> Any:
            index = faiss.IndexHNSWFlat(64, m)
            index.hnsw.efConstruction = ef_construction
            return _added(index, gallery)

        index, seconds = _cached_index(cache, f"{tag}-hnsw{m}-{ef_construction}", build_hnsw)
        _sweep(index, HNSW_EF_SEARCH, _set_ef_search, f"HNSW M={m}, efConstruction={ef_construction}, efSearch={{}}",
               seconds, queries, truth, record)
        del index
    return search_table(records, n, data, threads)


def _set_nprobe(index: Any, nprobe: int) -> None:
    index.nprobe = nprobe


def _set_ef_search(index: Any, ef: int) -> None:
    index.hnsw.efSearch = ef


def _sweep(index: Any, values: Sequence[int], apply: Callable[[Any, int], None], label: str,
           build_seconds: float, queries: np.ndarray, truth: np.ndarray, record: Callable[..., None]) -> None:
    """Time and score one built index at each search setting (``label`` formats it), stopping once recall@1 reaches 0.999."""
    mib = _index_mib(index)
    for value in values:
        apply(index, value)
        batched, single, found = _timed_queries(index, queries)
        recall = float(np.mean(found == truth))
        record(index=label.format(value), build_s=build_seconds, mib=mib, batched_qps=batched, single_qps=single, recall=recall)
        if recall >= 0.999:
            break


def _added(index: Any, vectors: np.ndarray) -> Any:
    index.add(vectors)
    return index


def search_table(records: list[dict[str, Any]], n: int, data: str, threads: int) -> str:
    """The markdown section of one gallery's measurements (ratios against the faster exact mode)."""
    exact = records[0]
    best_exact = max(exact["batched_qps"], exact["single_qps"])
    rows = []
    for r in records:
        rows.append([r["index"], "cached" if r["build_s"] is None else fmt(r["build_s"], 1), fmt(r["mib"], 0),
                     fmt(r["batched_qps"], 0), fmt(r["single_qps"], 0), f"{r['recall']:.4f}",
                     f"{max(r['batched_qps'], r['single_qps']) / best_exact:.1f}x"])
    described = {"random": "random unit 64-d vectors (uniform on the sphere)",
                 "clustered": f"unit 64-d vectors from a mixture of {CLUSTERS:,} Gaussians (spread {CLUSTER_SPREAD})"}[data]
    return "\n".join([
        f"### {n:,} {described}; {N_QUERIES:,} queries drawn the same way, k = 1, {threads} thread(s)",
        "",
        table(["index", "build s", "index size MiB", "queries/s, 1,000 per call", f"queries/s, 1 per call (median of {N_SINGLE})",
               "recall@1 vs exact", "speed vs exact (best mode of each)"], rows),
    ])


def verify_end_to_end(checkpoint: Path, threads: int, workdir: Path) -> str:
    from PIL import Image

    a, b = workdir / "a.png", workdir / "b.png"
    rng = np.random.default_rng(0)
    for path in (a, b):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(path)
    command = [
        sys.executable, "-m", "tripletnet", "verify", "--checkpoint", str(checkpoint), str(a), str(b), "--threshold", "1.0",
    ]
    env = thread_env(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH")]))

    def run() -> None:
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=REPO_ROOT)

    timing = measure(run, repeats=5, warmup=1)
    log(f"verify end to end: {timing.median:.2f} s")
    return "\n".join([
        "## verify end to end (process start to answer, one pair)",
        "",
        table(["command", "median s", "repeats"], [
            ["`tripletnet verify --checkpoint C a.png b.png --threshold 1.0`", fmt(timing.median, 2), timing.repeats],
        ]),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: an untrained default network)")
    parser.add_argument("--gallery", type=int, default=1_000_000, help="gallery size for the search section (default: 1,000,000)")
    parser.add_argument("--data", nargs="+", choices=("random", "clustered"), default=["random", "clustered"],
                        help="search galleries to measure (default: both)")
    parser.add_argument("--hnsw", default="32:80", help="HNSW graphs to build, M:efConstruction,... (default: 32:80)")
    parser.add_argument("--ivf", default="1024,4096", help="IVF-Flat nlist values to build (default: 1024,4096)")
    parser.add_argument("--cache", help="folder to keep built indexes in, so that a rerun measures without rebuilding")
    parser.add_argument("--search-only", action="store_true", help="only the search section")
    parser.add_argument("--rows", help="also write the search measurements as JSON here (DATA is substituted)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "RESULTS-inference.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.inference " + " ".join(sys.argv[1:])
    hnsw = _parse_pairs(args.hnsw)
    nlists = [int(v) for v in args.ivf.split(",") if v]
    cache = Path(args.cache) if args.cache else None
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sections = []
        if not args.search_only:
            checkpoint = _checkpoint(args.checkpoint, workdir)
            sections.append(embedding_throughput(checkpoint, args.threads, workdir))
        sections.append("## Gallery search\n\n" + "\n\n".join(
            faiss_search(args.gallery, args.threads, data, hnsw, nlists, cache,
                         Path(args.rows.replace("DATA", data)) if args.rows else None)
            for data in args.data))
        if not args.search_only:
            sections.append(verify_end_to_end(checkpoint, args.threads, workdir))
    header = "\n".join([
        "# Inference benchmarks",
        "",
        (f"Command: `{command.strip()}` (from the repository root). Machine load average at the end: {load_note()}; "
         "the machine is shared, so absolute figures are pessimistic and ratios measured side by side are what to read."),
        "",
        "",
    ])
    Path(args.output).write_text(header + "\n\n".join(sections) + "\n", encoding="utf-8")
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()

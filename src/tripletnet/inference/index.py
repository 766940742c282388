"""A searchable gallery of embeddings with faiss, saved as a folder.

Exact search (``IndexFlatL2``) by default; for large galleries, where exact search costs a pass over
every vector per query, an approximate index: IVF-Flat (``IndexIVFFlat``: k-means cells, ``nprobe`` of
them searched) or HNSW (``IndexHNSWFlat``: a neighbour graph). IVF is the approximate default: on a
clustered 1,000,000-vector gallery, with 4096 cells and 32 searched, it reached recall@1 0.999 at about 50x
the exact queries/s and built in minutes, where an HNSW graph takes tens of minutes
(benchmarks/RESULTS-inference.md). Distances are always reported as Euclidean (faiss' L2 indexes return
squared distances).

An index folder holds ``index.faiss``, ``items.json`` (a label and/or a path per gallery item) and
``meta.json`` (the checkpoint's weights fingerprint, its path, the index kind). It is written to a
temporary folder and renamed into place, so a reader never sees half of one; searching it with
embeddings of another checkpoint is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # only for the annotations: the CLI reads this module's defaults without loading torch
    import torch

from ..errors import ParameterError, UserError

INDEX_FORMAT = "tripletnet-index-v1"
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.json"
META_FILE = "meta.json"
KINDS = ("exact", "ivf", "hnsw")
APPROXIMATE_KINDS = ("ivf", "hnsw")
DEFAULT_APPROXIMATE = "ivf"
# HNSW graph degree and search breadth; see benchmarks/RESULTS-inference.md for their recall.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
# IVF cells: 4 sqrt(N) by default. On the clustered 1,000,000 gallery of benchmarks/RESULTS-inference.md,
# 32 of 4096 cells searched gave recall@1 0.999 (8 gave 0.997; with sqrt(N) = 1024 cells 32 gave 0.990).
IVF_CELLS_PER_SQRT_N = 4
IVF_NPROBE = 32
IVF_MIN_POINTS_PER_CELL = 39  # below this faiss' k-means warns that the cells are poorly trained
IVF_TRAINING_POINTS_PER_CELL = 40  # k-means trains on a seeded sample of at most this many vectors per cell
QUERY_BATCH = 4096


def _as_float32(vectors: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    # A torch tensor (duck-typed, so that importing this module does not import torch).
    array = vectors.detach().cpu().numpy() if hasattr(vectors, "detach") else np.asarray(vectors)
    if array.ndim != 2:
        raise ParameterError(name, f"must be a 2-D array (N, D), got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


@dataclass
class GalleryIndex:
    """Gallery embeddings in a faiss index, with what each item is.

    Attributes:
        index: the faiss index (L2 metric).
        fingerprint: weights fingerprint of the checkpoint that embedded the gallery.
        kind: "exact", "ivf" or "hnsw".
        labels: one label per gallery item (or None).
        paths: one file path per gallery item (or None).
        checkpoint: the checkpoint's path as given when the index was built (or None).
        extra: the approximate index's settings (nlist and nprobe, or hnsw_m, ef_construction and ef_search)
            and any other meta.json fields.
    """

    index: Any
    fingerprint: str
    kind: str = "exact"
    labels: list[Any] | None = None
    paths: list[str] | None = None
    checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray | torch.Tensor,
        *,
        fingerprint: str,
        labels: Sequence[Any] | None = None,
        paths: Sequence[str] | None = None,
        kind: str = "exact",
        checkpoint: str | None = None,
        hnsw_m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        ef_search: int = HNSW_EF_SEARCH,
        nlist: int | None = None,
        nprobe: int = IVF_NPROBE,
    ) -> GalleryIndex:
        """Index ``embeddings`` (N, D).

        Args:
            embeddings: the gallery, float (N, D), N >= 1.
            fingerprint: weights fingerprint of the checkpoint that produced them.
            labels, paths: optional per-item labels and file paths (length N).
            kind: "exact" (flat L2), or for large galleries "ivf" or "hnsw" (approximate).
            checkpoint: the checkpoint path, recorded so that ``search`` can find the model.
            hnsw_m, ef_construction, ef_search: HNSW graph degree and search breadths.
            nlist: IVF cells (default: 4 sqrt(N), at most N / 39 so that k-means has points to train on).
            nprobe: IVF cells searched per query (more: higher recall, slower), at most ``nlist``.

        Returns:
            The index.
        """
        import faiss

        vectors = _as_float32(embeddings, "embeddings")
        if len(vectors) == 0:
            raise ParameterError("embeddings", "is an empty gallery: there is nothing to search")
        if kind not in KINDS:
            raise ParameterError("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        for name, values in (("labels", labels), ("paths", paths)):
            if values is not None and len(values) != len(vectors):
                raise ParameterError(name, f"must have one entry per gallery item ({len(vectors)}), got {len(values)}")
        dim = vectors.shape[1]
        index: Any
        settings: dict[str, Any] = {}
        if kind == "exact":
            index = faiss.IndexFlatL2(dim)
        elif kind == "hnsw":
            for name, value in (("hnsw_m", hnsw_m), ("ef_construction", ef_construction), ("ef_search", ef_search)):
                _check_positive(name, value)
            index = faiss.IndexHNSWFlat(dim, hnsw_m)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
            settings = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
        else:
            index, settings = _trained_ivf(vectors, nlist, nprobe)
        index.add(vectors)
        return cls(
            index,
            fingerprint,
            kind,
            None if labels is None else list(labels),
            None if paths is None else [str(p) for p in paths],
            checkpoint,
            settings,
        )

    def search(self, queries: np.ndarray | torch.Tensor, k: int, batch_size: int = QUERY_BATCH) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest gallery items of each query.

        Args:
            queries: float (Q, D).
            k: neighbours per query, 1 <= k <= gallery size.
            batch_size: queries per faiss call (bounds the memory of the result buffers).

        Returns:
            (distances (Q, k) float32, Euclidean, ascending; indices (Q, k) int64).
        """
        vectors = _as_float32(queries, "queries")
        if vectors.shape[1] != self.dim:
            raise ParameterError("queries", f"have dimension {vectors.shape[1]}, the gallery {self.dim}")
        if not 1 <= k <= self.size:
            raise ParameterError("k", f"must be between 1 and the gallery size {self.size:,}, got {k}")
        if batch_size < 1:
            raise ParameterError("batch_size", f"must be at least 1, got {batch_size}")
        distances = np.empty((len(vectors), k), dtype=np.float32)
        indices = np.empty((len(vectors), k), dtype=np.int64)
        for start in range(0, len(vectors), batch_size):
            squared, found = self.index.search(vectors[start : start + batch_size], k)
            # Rounding can make a squared distance slightly negative; clamp before the root.
            distances[start : start + batch_size] = np.sqrt(np.maximum(squared, 0.0))
            indices[start : start + batch_size] = found
        return distances, indices

    def item(self, position: int) -> dict[str, Any]:
        """What gallery item ``position`` is: its index, and its label and path when known."""
        described: dict[str, Any] = {"index": int(position)}
        if self.labels is not None:
            described["label"] = self.labels[position]
        if self.paths is not None:
            described["path"] = self.paths[position]
        return described

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the index folder atomically (a temporary sibling folder renamed into place).

        An existing index folder at ``folder`` is replaced; any other non-empty folder is refused.
        """
        import faiss

        target = Path(folder)
        if target.exists() and not (target / META_FILE).is_file() and (not target.is_dir() or any(target.iterdir())):
            raise UserError(f"{target} exists and is not a tripletnet index folder; choose another --out")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
            tmp.mkdir()
        except OSError as exc:
            raise UserError(f"cannot write the index folder {target}: {exc.strerror or exc}") from None
        try:
            faiss.write_index(self.index, str(tmp / INDEX_FILE))
            (tmp / ITEMS_FILE).write_text(json.dumps({"labels": self.labels, "paths": self.paths}) + "\n", encoding="utf-8")
            meta = {
                "format": INDEX_FORMAT,
                "fingerprint": self.fingerprint,
                "kind": self.kind,
                "size": self.size,
                "dim": self.dim,
                "checkpoint": self.checkpoint,
                **self.extra,
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            _replace_folder(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(cls, folder: str | os.PathLike, fingerprint: str | None = None) -> GalleryIndex:
        """Read an index folder; with ``fingerprint``, refuse one built with other weights.

        Raises:
            UserError: the folder is missing, incomplete or damaged, or belongs to another checkpoint.
        """
        import faiss

        root = Path(folder)
        if not (root / META_FILE).is_file():
            raise UserError(f"{root} is not a tripletnet index folder (no {META_FILE}); build one with 'tripletnet index'")
        try:
            meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
                raise ValueError(f"{META_FILE} has no '{INDEX_FORMAT}' marker")
            items = json.loads((root / ITEMS_FILE).read_text(encoding="utf-8"))
            index: Any = faiss.read_index(str(root / INDEX_FILE))
        except (OSError, ValueError, RuntimeError) as exc:
            raise UserError(
                f"index folder {root} is damaged ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
            ) from None
        labels, paths = _check_index_folder(root, meta, items, int(index.ntotal))
        if "nprobe" in meta:  # a search setting: kept in meta.json, set again on every load
            index.nprobe = meta["nprobe"]
        known = ("format", "fingerprint", "kind", "size", "dim", "checkpoint")
        loaded = cls(index, meta["fingerprint"], meta.get("kind", "exact"), labels, paths,
                     meta.get("checkpoint"), {k: v for k, v in meta.items() if k not in known})
        if fingerprint is not None:
            loaded.check_fingerprint(fingerprint, root)
        return loaded

    def check_fingerprint(self, fingerprint: str, folder: str | os.PathLike) -> None:
        """Refuse (UserError) to serve queries embedded by weights other than the index's."""
        if self.fingerprint != fingerprint:
            raise UserError(
                f"index {Path(folder)} was built with other weights (fingerprint {self.fingerprint[:12]}, "
                f"this checkpoint {fingerprint[:12]}): rebuild it with 'tripletnet index' for this checkpoint"
            )


def _check_index_folder(root: Path, meta: dict[str, Any], items: Any, size: int) -> tuple[list[Any] | None, list[str] | None]:
    """Refuse, in one line, an index folder whose meta.json or items.json no longer fits its index (a hand edit).

    Returns:
        The items' labels and paths (each None when the index has none).
    """
    def damaged(problem: str) -> UserError:
        return UserError(f"index folder {root} is damaged: {problem}; rebuild it with 'tripletnet index'")

    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(meta.get("fingerprint"), str) or not meta["fingerprint"]:
        raise damaged(f"{META_FILE} records no weights fingerprint")
    if meta.get("size") != size or not whole(meta.get("size")):
        raise damaged(f"{size} vectors in {INDEX_FILE}, {META_FILE} says {meta.get('size')!r}")
    if meta.get("kind", "exact") not in KINDS:
        raise damaged(f"{META_FILE} names the index kind {meta.get('kind')!r}, not one of {', '.join(KINDS)}")
    if not isinstance(meta.get("checkpoint"), str | None):
        raise damaged(f"{META_FILE} records the checkpoint as {meta.get('checkpoint')!r}, not a path")
    if "nprobe" in meta and not (whole(meta["nprobe"]) and meta["nprobe"] >= 1):
        raise damaged(f"{META_FILE} sets nprobe to {meta['nprobe']!r}, not a whole number >= 1")
    if not isinstance(items, dict):
        raise damaged(f"{ITEMS_FILE} holds a {type(items).__name__}, not an object with labels and paths")
    labels, paths = items.get("labels"), items.get("paths")
    for name, values in (("labels", labels), ("paths", paths)):
        if values is not None and (not isinstance(values, list) or len(values) != size):
            count = len(values) if isinstance(values, list) else type(values).__name__
            raise damaged(f"{ITEMS_FILE} has {count} {name} for {size} gallery items")
    if paths is not None and not all(isinstance(path, str) for path in paths):
        raise damaged(f"{ITEMS_FILE} has paths that are not strings")
    return labels, paths


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ParameterError(name, f"must be at least 1, got {value}")


def _trained_ivf(vectors: np.ndarray, nlist: int | None, nprobe: int) -> tuple[Any, dict[str, Any]]:
    """An ``IndexIVFFlat`` whose cells k-means trained on (a seeded sample of) ``vectors``, and its settings."""
    import faiss

    most = max(1, len(vectors) // IVF_MIN_POINTS_PER_CELL)
    if nlist is None:
        nlist = min(most, max(1, round(IVF_CELLS_PER_SQRT_N * len(vectors) ** 0.5)))
    _check_positive("nlist", nlist)
    if nlist > most:
        raise ParameterError("nlist", f"must be at most {most:,} for {len(vectors):,} vectors "
                                      f"({IVF_MIN_POINTS_PER_CELL} per cell to train on), got {nlist:,}")
    _check_positive("nprobe", nprobe)
    nprobe = min(nprobe, nlist)  # searching every cell is already exact
    sample_size = min(len(vectors), IVF_TRAINING_POINTS_PER_CELL * nlist)
    sample = vectors
    if sample_size < len(vectors):
        sample = vectors[np.random.default_rng(0).choice(len(vectors), sample_size, replace=False)]
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(vectors.shape[1]), vectors.shape[1], nlist)
    index.train(sample)
    index.nprobe = nprobe
    return index, {"nlist": nlist, "nprobe": nprobe}


def _replace_folder(new: Path, target: Path) -> None:
    """Move folder ``new`` to ``target``; an old ``target`` is moved aside first and removed after."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.{secrets.token_hex(8)}.old")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)

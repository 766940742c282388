"""A searchable gallery of embeddings with faiss, saved as a folder.

Exact search (``IndexFlatL2``) by default; for large galleries, where exact search costs a pass over
every vector per query, an approximate index: IVF-Flat (``IndexIVFFlat``: k-means cells, ``nprobe`` of
them searched) or HNSW (``IndexHNSWFlat``: a neighbour graph). IVF is the approximate default: on a
clustered 1,000,000-vector gallery, with 4096 cells and 32 searched, it reached recall@1 0.999 at about 50x
the exact queries/s and built in minutes, where an HNSW graph takes tens of minutes
(benchmarks/RESULTS-inference.md). Distances are always reported as Euclidean (faiss' L2 indexes return
squared distances).

An index folder holds ``index.faiss``, ``items.json`` (a label and/or a path per gallery item) and
``meta.json`` (the checkpoint's weights fingerprint, its path, the index kind, and the sha256 of the
other two files). It is written to a temporary folder and renamed into place, so a reader never sees
half of one; searching it with embeddings of another checkpoint is refused, and so is a folder whose
index.faiss or items.json is not the one its meta.json was written with (a file copied in from
another index folder would otherwise give wrong neighbours without a word).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import numbers
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # only for the annotations: the CLI reads this module's defaults without loading torch
    import torch

from ..console import Logger, log_stderr
from ..errors import ParameterError, UserError
from ..fileio import WriteError, replace_folder

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
# faiss' HNSW draws levels with 1 / log(M): M = 1 kills the process (a segmentation fault) while vectors are added.
HNSW_M_MIN = 2
# Papers and faiss use M of 4 to 64; 1024 already costs 8 KB of links per vector in the base layer, and much
# larger values end in a C++ exception (2**31 - 1) or overflow faiss' int.
HNSW_M_MAX = 1024
# A search holds a heap of ef entries per query: ef_search 2**31 - 1 took 16 GB and 100 s for 5 queries.
# 2**20 is far beyond useful recall and still small; ef_construction shares the bound (faiss' int).
HNSW_EF_MAX = 2**20
# IVF cells: 4 sqrt(N) by default. On the clustered 1,000,000 gallery of benchmarks/RESULTS-inference.md,
# 32 of 4096 cells searched gave recall@1 0.999 (8 gave 0.997; with sqrt(N) = 1024 cells 32 gave 0.990).
IVF_CELLS_PER_SQRT_N = 4
IVF_NPROBE = 32
IVF_MIN_POINTS_PER_CELL = 39  # below this faiss' k-means warns that the cells are poorly trained
IVF_TRAINING_POINTS_PER_CELL = 40  # k-means trains on a seeded sample of at most this many vectors per cell
QUERY_BATCH = 4096
CHECKSUMS = "sha256"  # the meta.json field: {file name: hex digest} of index.faiss and items.json
_HASH_CHUNK = 1 << 20
_META_FIELDS = ("format", "fingerprint", "kind", "size", "dim", "checkpoint", CHECKSUMS)


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
    # The folder whose fingerprint check_fingerprint passed: queries then come from the index's own checkpoint.
    _checked_folder: Path | None = field(default=None, init=False, repr=False, compare=False)

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
            hnsw_m, ef_construction, ef_search: HNSW graph degree (``HNSW_M_MIN`` to ``HNSW_M_MAX``) and build
                and search breadths (1 to ``HNSW_EF_MAX``).
            nlist: IVF cells (default: 4 sqrt(N), at most N / 39 so that k-means has points to train on).
            nprobe: IVF cells searched per query (more: higher recall, slower), at most ``nlist``.

        Returns:
            The index.
        """
        import faiss

        vectors = _as_float32(embeddings, "embeddings")
        if len(vectors) == 0:
            raise ParameterError("embeddings", "is an empty gallery: there is nothing to search")
        check_settings(kind, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search, nlist=nlist, nprobe=nprobe)
        for name, values in (("labels", labels), ("paths", paths)):
            if values is not None and len(values) != len(vectors):
                raise ParameterError(name, f"must have one entry per gallery item ({len(vectors)}), got {len(values)}")
        dim = vectors.shape[1]
        index: Any
        settings: dict[str, Any] = {}
        if kind == "exact":
            index = faiss.IndexFlatL2(dim)
        elif kind == "hnsw":
            hnsw_m, ef_construction, ef_search = int(hnsw_m), int(ef_construction), int(ef_search)  # numpy ints too
            index = faiss.IndexHNSWFlat(dim, hnsw_m)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
            settings = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
        else:
            index, settings = _trained_ivf(vectors, None if nlist is None else int(nlist), int(nprobe))
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

        Raises:
            ParameterError: bad queries, k or batch_size, or an approximate index that finds fewer than
                ``k`` neighbours for a query (its cells or graph reach too few items).
            UserError: after :meth:`check_fingerprint` passed, queries of another dimension than the
                index: the queries come from the index's checkpoint, so it is the index folder that is wrong.
        """
        vectors = _as_float32(queries, "queries")
        if vectors.shape[1] != self.dim:
            if self._checked_folder is not None:
                raise UserError(
                    f"index folder {self._checked_folder} does not match the checkpoint: its {INDEX_FILE} holds "
                    f"{self.dim}-dimensional vectors, the checkpoint embeds {vectors.shape[1]} (the folder is damaged "
                    "or mixed); rebuild it with 'tripletnet index'"
                )
            raise ParameterError("queries", f"have dimension {vectors.shape[1]}, the gallery {self.dim}")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise ParameterError("k", f"must be a whole number, got {k!r}")
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
        # faiss pads with -1 what an approximate search did not reach (IVF: the nprobe cells hold fewer than
        # k items; HNSW: a small ef_search or graph); -1 would read as the last gallery item.
        fewest = int((indices >= 0).sum(axis=1).min()) if len(indices) else k
        if fewest < k:
            setting = "nprobe" if self.kind == "ivf" else "ef_search"
            raise ParameterError("k", f"is more than the {self.kind} index finds for some queries ({fewest} of {k}): "
                                      f"ask for at most {fewest}, or rebuild the index with a larger {setting}",
                                 related=(setting,))
        return distances, indices

    def item(self, position: int) -> dict[str, Any]:
        """What gallery item ``position`` is: its index, and its label and path when known."""
        if not 0 <= position < self.size:  # a negative position would silently name an item from the end
            raise ParameterError("position", f"must be between 0 and {self.size - 1:,}, got {position}")
        described: dict[str, Any] = {"index": int(position)}
        if self.labels is not None:
            described["label"] = self.labels[position]
        if self.paths is not None:
            described["path"] = self.paths[position]
        return described

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the index folder atomically (a temporary sibling folder renamed into place).

        An existing index folder at ``folder`` is replaced; any other non-empty folder is refused. meta.json
        records the sha256 of index.faiss and items.json, so that :meth:`load` can tell they belong together.

        Raises:
            UserError: ``folder`` is another kind of folder.
            WriteError: the folder cannot be written (no space left, read-only, ...); nothing is left behind.
        """
        target = Path(folder)
        if target.exists() and not (target / META_FILE).is_file() and (not target.is_dir() or any(target.iterdir())):
            raise UserError(f"{target} exists and is not a tripletnet index folder; choose another --out")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
            tmp.mkdir()
        except OSError as exc:
            raise WriteError(target, exc) from None
        try:
            index_digest = _write_faiss_index(self.index, tmp / INDEX_FILE)
            items = (json.dumps({"labels": self.labels, "paths": self.paths}) + "\n").encode("utf-8")
            _write_file(tmp / ITEMS_FILE, items)
            meta = {
                "format": INDEX_FORMAT,
                "fingerprint": self.fingerprint,
                "kind": self.kind,
                "size": self.size,
                "dim": self.dim,
                "checkpoint": self.checkpoint,
                **self.extra,
                CHECKSUMS: {INDEX_FILE: index_digest, ITEMS_FILE: hashlib.sha256(items).hexdigest()},
            }
            _write_file(tmp / META_FILE, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
            _fsync_folder(tmp)
            replace_folder(tmp, target)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise WriteError(target, exc) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        with contextlib.suppress(OSError):  # the rename's durability: best effort, the folder is in place either way
            _fsync_folder(target.parent)
        return target

    @classmethod
    def load(cls, folder: str | os.PathLike, fingerprint: str | None = None, log: Logger = log_stderr) -> GalleryIndex:
        """Read an index folder; with ``fingerprint``, refuse one built with other weights.

        ``log`` gets a note for a folder written before meta.json recorded checksums (its files cannot be
        checked against each other).

        Raises:
            UserError: the folder is missing, incomplete or damaged (its files do not belong together), or
                belongs to another checkpoint.
        """
        import faiss

        root = Path(folder)
        if not (root / META_FILE).is_file():
            raise UserError(f"{root} is not a tripletnet index folder (no {META_FILE}); build one with 'tripletnet index'")
        try:
            meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
                raise ValueError(f"{META_FILE} has no '{INDEX_FORMAT}' marker")
            checksums = _recorded_checksums(root, meta)
            # Before faiss parses it: never hand faiss bytes that are not the ones this folder was written with.
            if checksums is not None and _file_sha256(root / INDEX_FILE) != checksums[INDEX_FILE]:
                raise _not_belonging(root, INDEX_FILE)
            items_bytes = (root / ITEMS_FILE).read_bytes()
            items = json.loads(items_bytes.decode("utf-8"))
            index: Any = faiss.read_index(str(root / INDEX_FILE))
        except (OSError, ValueError, RuntimeError) as exc:
            raise UserError(
                f"index folder {root} is damaged ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
            ) from None
        labels, paths = _check_index_folder(root, meta, items, int(index.ntotal), int(index.d))
        # After the checks above, which name what an edit of items.json broke; this catches the rest.
        if checksums is not None and hashlib.sha256(items_bytes).hexdigest() != checksums[ITEMS_FILE]:
            raise _not_belonging(root, ITEMS_FILE)
        if checksums is None:
            log(f"note: index folder {root} records no checksums (written by an older tripletnet), so an {INDEX_FILE} or "
                f"{ITEMS_FILE} copied in from another index cannot be detected; rebuild it with 'tripletnet index' to check them")
        if "nprobe" in meta:  # a search setting: kept in meta.json, set again on every load
            index.nprobe = meta["nprobe"]
        loaded = cls(index, meta["fingerprint"], meta.get("kind", "exact"), labels, paths,
                     meta.get("checkpoint"), {k: v for k, v in meta.items() if k not in _META_FIELDS})
        if fingerprint is not None:
            loaded.check_fingerprint(fingerprint, root)
        return loaded

    def check_fingerprint(self, fingerprint: str, folder: str | os.PathLike) -> None:
        """Refuse (UserError) to serve queries embedded by weights other than the index's.

        Once it passed, :meth:`search` takes queries of another dimension as a sign that the folder is wrong.
        """
        if self.fingerprint != fingerprint:
            raise UserError(
                f"index {Path(folder)} was built with other weights (fingerprint {self.fingerprint[:12]}, "
                f"this checkpoint {fingerprint[:12]}): rebuild it with 'tripletnet index' for this checkpoint"
            )
        self._checked_folder = Path(folder)


def check_settings(
    kind: str,
    *,
    hnsw_m: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    ef_search: int = HNSW_EF_SEARCH,
    nlist: int | None = None,
    nprobe: int = IVF_NPROBE,
) -> None:
    """Refuse (ParameterError) settings of ``kind`` that faiss cannot use, before any gallery is embedded.

    Only the settings of ``kind`` are checked. nlist's upper bound depends on the gallery size and is
    checked when the index is built.
    """
    if kind not in KINDS:
        raise ParameterError("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "hnsw":
        _check_whole("hnsw_m", hnsw_m, HNSW_M_MIN, HNSW_M_MAX)
        _check_whole("ef_construction", ef_construction, 1, HNSW_EF_MAX)
        _check_whole("ef_search", ef_search, 1, HNSW_EF_MAX)
    elif kind == "ivf":
        if nlist is not None:
            _check_whole("nlist", nlist, 1)
        _check_whole("nprobe", nprobe, 1)  # more than nlist is allowed: it searches every cell


def _check_whole(name: str, value: Any, least: int, most: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ParameterError(name, f"must be a whole number, got {value!r}")
    if value < least or (most is not None and value > most):
        span = f"at least {least}" if most is None else f"between {least} and {most:,}"
        raise ParameterError(name, f"must be {span}, got {value}")


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path`` and fsync it (a failed close raises, as a full disk can make it)."""
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_faiss_index(index: Any, path: Path) -> str:
    """Write ``index`` to the new file ``path`` through Python's file (so a full disk is an OSError); its sha256.

    faiss' own file writer reports a failed write as a RuntimeError and ignores a failed close.
    """
    import faiss

    digest = hashlib.sha256()
    with open(path, "xb") as fh:
        def write(chunk: bytes) -> int:
            digest.update(chunk)
            fh.write(chunk)
            return len(chunk)

        writer = faiss.PyCallbackIOWriter(write)  # type: ignore[attr-defined]  # in faiss, not in its stubs
        try:
            faiss.write_index(index, writer)
        except RuntimeError as exc:
            raise _faiss_os_error(exc) from None
        fh.flush()
        os.fsync(fh.fileno())
    return digest.hexdigest()


_STRERRORS = {os.strerror(code): code for code in errno.errorcode}


def _faiss_os_error(error: RuntimeError) -> OSError | RuntimeError:
    """The OSError behind a faiss write error ("... write error in F: 8147 != 256000 (No space left on device)").

    A RuntimeError that names no system error (a faiss bug, an index it cannot write) is returned as it is.
    """
    text = str(error).strip()
    for message, code in _STRERRORS.items():
        # faiss ends the message with strerror: in parentheses after a short write, after ": " when open failed.
        if f"({message})" in text or text.endswith(f": {message}"):
            return OSError(code, message)
    if "write error" in text:
        return OSError(errno.EIO, os.strerror(errno.EIO))
    return error


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _recorded_checksums(root: Path, meta: dict[str, Any]) -> dict[str, str] | None:
    """meta.json's sha256 of index.faiss and items.json, or None for a folder written before they were recorded."""
    if CHECKSUMS not in meta:
        return None
    recorded = meta[CHECKSUMS]
    if not (isinstance(recorded, dict)
            and all(isinstance(recorded.get(name), str) and re.fullmatch(r"[0-9a-f]{64}", recorded[name])
                    for name in (INDEX_FILE, ITEMS_FILE))):
        raise UserError(f"index folder {root} is damaged: {META_FILE} records the {CHECKSUMS} of {INDEX_FILE} and "
                        f"{ITEMS_FILE} as {recorded!r}, not two hex digests; rebuild it with 'tripletnet index'")
    return {INDEX_FILE: recorded[INDEX_FILE], ITEMS_FILE: recorded[ITEMS_FILE]}


def _not_belonging(root: Path, name: str) -> UserError:
    return UserError(f"index folder {root} is damaged or mixed: its {name} does not belong to its {META_FILE} "
                     f"(not the file the folder was written with); rebuild it with 'tripletnet index'")


def _check_index_folder(
    root: Path, meta: dict[str, Any], items: Any, size: int, dim: int
) -> tuple[list[Any] | None, list[str] | None]:
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
    if meta.get("dim") != dim or not whole(meta.get("dim")):
        raise damaged(f"{INDEX_FILE} holds {dim}-dimensional vectors, {META_FILE} says {meta.get('dim')!r}")
    if meta.get("kind", "exact") not in KINDS:
        raise damaged(f"{META_FILE} names the index kind {meta.get('kind')!r}, not one of {', '.join(KINDS)}")
    if not isinstance(meta.get("checkpoint"), str | None):
        raise damaged(f"{META_FILE} records the checkpoint as {meta.get('checkpoint')!r}, not a path")
    if "nprobe" in meta and not (whole(meta["nprobe"]) and meta["nprobe"] >= 1):
        raise damaged(f"{META_FILE} sets nprobe to {meta['nprobe']!r}, not a whole number >= 1")
    if not isinstance(items, dict):
        raise damaged(f"{ITEMS_FILE} holds a {type(items).__name__}, not an object with labels and paths")
    missing = [name for name in ("labels", "paths") if name not in items]
    if missing:  # every folder records both (null when the gallery has none); {} would print items as #0
        raise damaged(f"{ITEMS_FILE} lacks the {' and '.join(missing)} entr{'ies' if len(missing) > 1 else 'y'}")
    labels, paths = items["labels"], items["paths"]
    for name, values in (("labels", labels), ("paths", paths)):
        if values is not None and (not isinstance(values, list) or len(values) != size):
            count = len(values) if isinstance(values, list) else type(values).__name__
            raise damaged(f"{ITEMS_FILE} has {count} {name} for {size} gallery items")
    if paths is not None and not all(isinstance(path, str) for path in paths):
        raise damaged(f"{ITEMS_FILE} has paths that are not strings")
    return labels, paths


def _trained_ivf(vectors: np.ndarray, nlist: int | None, nprobe: int) -> tuple[Any, dict[str, Any]]:
    """An ``IndexIVFFlat`` whose cells k-means trained on (a seeded sample of) ``vectors``, and its settings."""
    import faiss

    most = max(1, len(vectors) // IVF_MIN_POINTS_PER_CELL)
    if nlist is None:
        nlist = min(most, max(1, round(IVF_CELLS_PER_SQRT_N * len(vectors) ** 0.5)))
    if nlist > most:
        raise ParameterError("nlist", f"must be at most {most:,} for {len(vectors):,} vectors "
                                      f"({IVF_MIN_POINTS_PER_CELL} per cell to train on), got {nlist:,}")
    nprobe = min(nprobe, nlist)  # searching every cell is already exact
    sample_size = min(len(vectors), IVF_TRAINING_POINTS_PER_CELL * nlist)
    sample = vectors
    if sample_size < len(vectors):
        sample = vectors[np.random.default_rng(0).choice(len(vectors), sample_size, replace=False)]
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(vectors.shape[1]), vectors.shape[1], nlist)
    index.train(sample)
    index.nprobe = nprobe
    return index, {"nlist": nlist, "nprobe": nprobe}

"""A trained model ready to use: embed images, verify a pair, search a gallery.

``load_model(checkpoint)`` rebuilds the network a checkpoint was trained with and wraps it in a
:class:`TripletModel`. Images may be file paths, PIL images, numpy arrays or tensors; they are
prepared by the one image pipeline, :mod:`tripletnet.data.images` (the function training reads its
image files with: EXIF orientation, short side resized, centre crop, channels), and embedded in
batches in eval mode; the network normalises with the run's mean and std itself.

A verification threshold comes from the caller, or from a calibration file written beside the
checkpoint (``<checkpoint>.calibration.json``) by :func:`write_calibration`, which records the
target FAR, the data it was calibrated on and the fingerprint of the weights it belongs to.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import TrainConfig
from ..console import Logger, log_stderr, progress
from ..data.images import IMAGE_SUFFIXES, is_grey, open_image, pillow_errors, prepare_image
from ..errors import ParameterError, UserError
from ..fileio import atomic_write_text
from ..models import EmbeddingNet
from ..models.inputs import images_to_input
from ..training.checkpoint import checkpoint_input_shape, load_checkpoint, model_from_checkpoint, weights_fingerprint
from ..training.loop import resolve_device
from .formats import CALIBRATION_SUFFIX

# What the networks of today take when a checkpoint does not record its input shape.
DEFAULT_INPUT_SHAPE = (1, 28, 28)
BATCH_SIZE = 256
CALIBRATION_FORMAT = "tripletnet-calibration-v1"
# Embeddings are L2-normalised, so every distance lies in [0, 2]: a threshold outside it decides nothing.
MAX_DISTANCE = 2.0

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
Images = ImageLike | Sequence[ImageLike]


# --------------------------------------------------------------------------- checkpoint facts


def calibration_path(checkpoint: str | os.PathLike) -> Path:
    """Where the calibration of ``checkpoint`` lives: ``<checkpoint>.calibration.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + CALIBRATION_SUFFIX)


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """A decision threshold chosen on labelled data for one set of weights.

    Attributes:
        threshold: distances at or below it mean "same identity".
        far: the target false-accept rate it was chosen for.
        far_reached: the false-accept rate it actually has on the calibration data (None if unknown).
        val: the validation rate (true-accept rate) at that threshold (None if unknown).
        data: what it was calibrated on, e.g. ``{"dataset": "mnist", "split": "test", "images": 10000, "pairs": ...}``.
        fingerprint: :func:`weights_fingerprint` of the weights it belongs to.
        path: the file it was read from (None if not read from a file).
    """

    threshold: float
    far: float
    far_reached: float | None
    val: float | None
    data: dict[str, Any]
    fingerprint: str
    path: Path | None = None

    def describe(self) -> str:
        """One line: the threshold, its FAR and where it comes from."""
        data = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in self.data.items())
        reached = f", reached {self.far_reached:.2g}" if self.far_reached is not None else ""
        return f"threshold {self.threshold:.4f} at FAR {self.far:g}{reached}, calibrated on {data or 'unrecorded data'}"


def threshold_problem(threshold: float) -> str | None:
    """What is wrong with a verification threshold (as ``"must be ..."``), or None when it is usable.

    The one rule for a threshold given on the command line and one read from a calibration file.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        return f"must be a number, a distance in [0, {MAX_DISTANCE:g}], got {threshold!r}"
    if not (math.isfinite(threshold) and 0 <= threshold <= MAX_DISTANCE):
        return f"must be a distance in [0, {MAX_DISTANCE:g}] (embeddings lie on the unit sphere), got {threshold}"
    return None


def write_calibration(
    checkpoint: str | os.PathLike,
    *,
    threshold: float,
    far: float,
    data: Mapping[str, Any],
    far_reached: float | None = None,
    val: float | None = None,
    fingerprint: str | None = None,
) -> Path:
    """Write ``<checkpoint>.calibration.json`` atomically (``tripletnet evaluate`` calls this).

    Args:
        checkpoint: the checkpoint the threshold was computed for.
        threshold: the distance threshold, in [0, 2].
        far: the target false-accept rate it was chosen for.
        data: a description of the calibration data (dataset, split, images, pairs, protocol, ...).
        far_reached: the FAR the threshold reaches on that data.
        val: the validation rate at that threshold.
        fingerprint: the weights' fingerprint; read from the checkpoint when not given.

    Returns:
        The path written.
    """
    problem = threshold_problem(threshold)
    if problem:
        raise ParameterError("threshold", problem)
    if not 0 < far <= 1:
        raise ParameterError("far", f"must be in (0, 1], got {far}")
    if fingerprint is None:
        fingerprint = weights_fingerprint(load_checkpoint(Path(checkpoint))["model"])
    record = {
        "format": CALIBRATION_FORMAT,
        "threshold": float(threshold),
        "far": float(far),
        "far_reached": None if far_reached is None else float(far_reached),
        "val": None if val is None else float(val),
        "data": dict(data),
        "checkpoint": Path(checkpoint).name,
        "fingerprint": fingerprint,
    }
    path = calibration_path(checkpoint)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_calibration(checkpoint: str | os.PathLike, fingerprint: str) -> Calibration | None:
    """The calibration beside ``checkpoint``, or None if there is none.

    Raises:
        UserError: the file is unreadable or holds values no calibration can have (a threshold
            that is NaN, negative, infinite or beyond any distance, a FAR outside (0, 1]), or it
            belongs to other weights (a stale calibration would silently give a wrong threshold).
    """
    path = calibration_path(checkpoint)
    if not path.is_file():
        return None
    calibration = _parse_calibration(path)
    if calibration.fingerprint != fingerprint:
        raise UserError(
            f"calibration file {path} belongs to other weights (fingerprint {calibration.fingerprint[:12]}, "
            f"checkpoint {fingerprint[:12]}); re-run 'tripletnet evaluate --checkpoint {checkpoint}' to calibrate it"
        )
    return calibration


def existing_calibration(checkpoint: str | os.PathLike) -> Calibration | None:
    """The calibration file beside ``checkpoint`` whatever weights it belongs to; None if absent or unusable."""
    path = calibration_path(checkpoint)
    try:
        return _parse_calibration(path) if path.is_file() else None
    except UserError:
        return None


def _parse_calibration(path: Path) -> Calibration:
    redo = "delete it or re-run 'tripletnet evaluate'"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"no '{CALIBRATION_FORMAT}' marker")
        calibration = Calibration(
            threshold=_number(record, "threshold"), far=_number(record, "far"),
            far_reached=None if record.get("far_reached") is None else _number(record, "far_reached"),
            val=None if record.get("val") is None else _number(record, "val"),
            data=dict(record.get("data") or {}), fingerprint=record["fingerprint"], path=path,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"calibration file {path} is unreadable ({exc}); {redo}") from None
    problems = [f"its threshold {threshold_problem(calibration.threshold)}"] if threshold_problem(calibration.threshold) else []
    if not (math.isfinite(calibration.far) and 0 < calibration.far <= 1):
        problems.append(f"its far must be in (0, 1], got {calibration.far}")
    for name, rate in (("far_reached", calibration.far_reached), ("val", calibration.val)):
        if rate is not None and not (math.isfinite(rate) and 0 <= rate <= 1):
            problems.append(f"its {name} must be a rate in [0, 1], got {rate}")
    if not isinstance(calibration.fingerprint, str) or not calibration.fingerprint:
        problems.append("it records no weights fingerprint")
    if problems:
        raise UserError(f"calibration file {path} is not usable: {'; '.join(problems)}; {redo}")
    return calibration


def _number(record: dict[str, Any], name: str) -> float:
    """``record[name]``, a JSON number, as a float; anything else (a string, a bool, null) is a TypeError naming it."""
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"its {name} is {value!r}, not a number")
    return float(value)


# --------------------------------------------------------------------------- preprocessing


class _ChannelNotice:
    """Says once per model that images of another channel count are being converted."""

    def __init__(self, log: Logger) -> None:
        self.log = log
        self.said = False

    def __call__(self, found: int, wanted: int) -> None:
        if not self.said:
            self.said = True
            # In the pipeline's terms: a file's RGBA, CMYK or palette image is colour (or grey), not "4 channels".
            kinds = {1: "grey", 3: "colour"}
            self.log(f"note: converting {kinds[found]} images to the {kinds[wanted]} ({wanted} channel"
                     f"{'s' if wanted > 1 else ''}) the model takes")


def _pipeline_size(input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(channels, side) of a network's square input, as the image pipeline takes them."""
    channels, height, width = input_shape
    if height != width:
        raise ParameterError("input_shape", f"must be square for the image pipeline, got {height} x {width}")
    return channels, height


def _channels_of(image: Image.Image) -> int:
    """The channel count the image pipeline sees in ``image``: 1 when it carries no colour, else 3."""
    return 1 if is_grey(image) else 3


def preprocess_image(image: Image.Image, input_shape: tuple[int, int, int] = DEFAULT_INPUT_SHAPE) -> torch.Tensor:
    """A PIL image -> uint8 tensor (C, H, W) by the one image pipeline (:mod:`tripletnet.data.images`).

    The pixels training reads from the same picture as a file: EXIF orientation applied, the short
    side resized to the model's side, centre-cropped, brought to the model's channel count. The
    network normalises them with the run's mean and std itself.

    Raises:
        UserError: the image cannot be prepared (no pixels, a float image holding NaN).
    """
    channels, size = _pipeline_size(input_shape)
    with pillow_errors("the given PIL image"):
        return torch.from_numpy(np.array(prepare_image(image, size, channels)))


def _read_file(path: str | os.PathLike, input_shape: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
    """One image file -> (uint8 tensor (C, H, W) by the image pipeline, the file's own channel count).

    Raises:
        UserError: the file is missing or unreadable (the message names it).
    """
    channels, size = _pipeline_size(input_shape)
    with open_image(path) as image:
        return torch.from_numpy(np.array(prepare_image(image, size, channels))), _channels_of(image)


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursively, hidden entries skipped), in sorted order.

    Symlinked folders are followed, as the training folder's identity listing follows them (so an
    index of a folder sees the images training saw); a link back to a folder above it is not.

    Raises:
        UserError: ``root`` is not a folder or holds no images.
    """
    folder = Path(root)
    if folder.is_file():
        raise UserError(f"{folder} is a file, not a folder of images")
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}")
    files: list[Path] = []
    walked_into = {str(folder): frozenset({folder.resolve()})}  # each folder -> the real folders on the way to it
    for parent, subfolders, names in os.walk(folder, followlinks=True):
        on_the_way = walked_into.pop(parent)
        entered = []
        for name in subfolders:  # not hidden folders, nor links back to a folder on the way here (a loop)
            real = Path(parent, name).resolve() if not name.startswith(".") else None
            if real is not None and real not in on_the_way:
                entered.append(name)
                walked_into[os.path.join(parent, name)] = on_the_way | {real}
        subfolders[:] = entered  # in place, so that os.walk goes into these alone
        files.extend(Path(parent, name) for name in names
                     if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES and Path(parent, name).is_file())
    files.sort()
    if not files:
        raise UserError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def readable_images(files: Sequence[Path], log: Logger = log_stderr) -> list[Path]:
    """The files of ``files`` that decode, the others counted and the first named in one line.

    For galleries and query folders given ``skip_bad_images``: one damaged file of a hundred
    thousand need not stop the whole folder. Each kept file is decoded again when it is embedded.

    Raises:
        UserError: none of them decodes.
    """
    kept, skipped = [], []
    for path in progress(files, desc="checking images", unit="img"):
        try:
            with open_image(path):
                kept.append(path)
        except UserError as exc:
            skipped.append(str(exc))
    if skipped:
        log(f"skipped {len(skipped)} unreadable images of {len(files):,} (the first: {skipped[0]})")
    if not kept:
        raise UserError(f"none of the {len(files):,} images could be read")
    return kept


def _convert_channels(batch: torch.Tensor, channels: int, notice: _ChannelNotice) -> torch.Tensor:
    """Float (N, C, H, W) with C in {1, 3} -> the model's channel count (ITU-R 601 luma, as Pillow's "L")."""
    found = batch.shape[1]
    if found == channels:
        return batch
    if found not in (1, 3) or channels not in (1, 3):
        raise ParameterError("images", f"have {found} channels; the model takes {channels} (only 1 <-> 3 is converted)")
    notice(found, channels)
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=batch.dtype).view(1, 3, 1, 1)
        return (batch * weights).sum(dim=1, keepdim=True)
    return batch.expand(-1, 3, -1, -1)


def _array_batch(array: np.ndarray | torch.Tensor, input_shape: tuple[int, int, int], notice: _ChannelNotice) -> torch.Tensor:
    """uint8 (values 0..255) or float (values 0..1) array -> float (N, C, H, W) in [0, 1].

    2-D: one H x W image; 3-D: a batch N x H x W of one-channel images (as the data layer holds
    them); 4-D: N x C x H x W.
    """
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        array = array.copy()  # np.asarray of a PIL image is read-only, and torch warns about wrapping one
    shape = tuple(array.shape)
    tensor = torch.as_tensor(array).detach().cpu()
    if tensor.ndim == 2:
        tensor = tensor[None, None]
    elif tensor.ndim == 3:
        tensor = tensor[:, None]
    elif tensor.ndim != 4:
        raise ParameterError("images", f"must be 2-D (H, W), 3-D (N, H, W) or 4-D (N, C, H, W), got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        tensor = tensor.to(torch.float32) / 255.0
    elif tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
        # NaN would come back as NaN embeddings, and 0..255 floats as confident nonsense: both are refused.
        if tensor.numel() and not torch.isfinite(tensor).all():
            raise ParameterError("images", "hold NaN or infinite values")
        if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
            raise ParameterError("images", f"as floats must lie in 0..1 (pass uint8 for 0..255), got values from "
                                           f"{float(tensor.min()):g} to {float(tensor.max()):g}")
    else:
        raise ParameterError("images", f"must be uint8 (0..255) or floating point (0..1), got {tensor.dtype}")
    _, height, width = input_shape
    if tuple(tensor.shape[2:]) != (height, width):
        channels_last = len(shape) == 3 and shape[2] in (1, 3, 4) and shape[:2] == (height, width)
        hint = (f"; this looks like one (H, W, C) image, as np.asarray of a PIL image gives, read as {shape[0]} images "
                "(N, H, W): pass the PIL image itself, or array.transpose(2, 0, 1)[None]") if channels_last else (
                "; pass file paths or PIL images to have them resized")
        raise ParameterError("images", f"must be {height} x {width} pixels as the model takes, got "
                                       f"{tensor.shape[2]} x {tensor.shape[3]}{hint}")
    return _convert_channels(tensor, input_shape[0], notice)


def _prepared(item: ImageLike, input_shape: tuple[int, int, int], notice: _ChannelNotice) -> torch.Tensor:
    """A file or PIL image -> uint8 (C, H, W) by the image pipeline; another channel count is said once."""
    if isinstance(item, (str, os.PathLike)):
        tensor, found = _read_file(item, input_shape)
    elif isinstance(item, Image.Image):
        tensor, found = preprocess_image(item, input_shape), _channels_of(item)
    else:
        raise ParameterError("images", f"must be paths, PIL images, numpy arrays or tensors, got {type(item).__name__}")
    if found != input_shape[0]:
        notice(found, input_shape[0])
    return tensor


def _items(images: Images) -> list[ImageLike]:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, (bytes, bytearray)) or not isinstance(images, Iterable):
        raise ParameterError("images", f"must be paths, PIL images, numpy arrays or tensors, or a list of them, "
                                       f"got {type(images).__name__}")
    return list(images)


def _to_batch(images: Images, input_shape: tuple[int, int, int], notice: _ChannelNotice) -> torch.Tensor:
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return _array_batch(images, input_shape, notice)
    parts = [
        _array_batch(item, input_shape, notice) if isinstance(item, (np.ndarray, torch.Tensor))
        else images_to_input(_prepared(item, input_shape, notice)[None])
        for item in _items(images)
    ]
    if not parts:
        return torch.empty(0, *input_shape)
    return torch.cat(parts)


def _chunks(images: Images, batch_size: int) -> Iterator[Images]:
    """Slices of at most ``batch_size`` images, so that only one batch is ever held as float."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim < 3:
            yield images
        else:
            for start in range(0, max(len(images), 1), batch_size):
                yield images[start : start + batch_size]
    elif isinstance(images, (str, os.PathLike, Image.Image)):
        yield images
    else:
        items = _items(images)
        for start in range(0, max(len(items), 1), batch_size):
            yield items[start : start + batch_size]


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Verification:
    """The answer to "do these two images show the same identity?".

    Attributes:
        distance: Euclidean distance of the two embeddings (0..2 on the unit sphere).
        same: distance <= threshold.
        threshold: the threshold used.
        threshold_source: where it came from: ``"given"`` or the calibration's description.
        far: the target FAR of a calibrated threshold (None for a given one).
    """

    distance: float
    same: bool
    threshold: float
    threshold_source: str
    far: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Neighbours:
    """k nearest gallery items of each query: distances (Q, k) ascending and gallery indices (Q, k)."""

    distances: torch.Tensor
    indices: torch.Tensor


class TripletModel:
    """A loaded embedding network with what a user does with it.

    Attributes:
        network: the :class:`EmbeddingNet`, in eval mode.
        config: the training configuration stored in the checkpoint.
        checkpoint: the checkpoint file.
        fingerprint: :func:`weights_fingerprint` of its weights.
        input_shape: (channels, height, width) the network takes.
    """

    def __init__(
        self, network: EmbeddingNet, config: TrainConfig, checkpoint: Path, fingerprint: str,
        input_shape: tuple[int, int, int] = DEFAULT_INPUT_SHAPE, log: Logger = log_stderr,
        device: torch.device | None = None,
    ) -> None:
        self.device = device or torch.device("cpu")
        # NHWC is oneDNN's preferred layout on CPU: 2.5-4x the images/s of NCHW here (as in training).
        # Module.to takes memory_format at run time; torch's overload stubs leave it out.
        self.network = network.eval().to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.config = config
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint
        self.input_shape = input_shape
        self.log = log
        self._channel_notice = _ChannelNotice(log)

    @property
    def embedding_dim(self) -> int:
        return int(self.network.embedding_dim)

    @property
    def threshold(self) -> Calibration | None:
        """The calibration beside the checkpoint (threshold, FAR, data), or None if it was never calibrated."""
        return read_calibration(self.checkpoint, self.fingerprint)

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Files or PIL images -> uint8 (N, C, H, W): the network's input before scaling, by the image pipeline.

        The very tensor training holds for the same files (:mod:`tripletnet.data.images`), and what an
        ONNX or TorchScript export takes.
        """
        prepared = [_prepared(item, self.input_shape, self._channel_notice) for item in _items(images)]
        return torch.stack(prepared) if prepared else torch.empty(0, *self.input_shape, dtype=torch.uint8)

    def to_batch(self, images: Images) -> torch.Tensor:
        """Images -> float (N, C, H, W) in [0, 1], preprocessed for this network."""
        return _to_batch(images, self.input_shape, self._channel_notice)

    @torch.no_grad()
    def embed(self, images: Images, batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """Embeddings (N, D), float32, L2-normalised.

        Args:
            images: a file path, PIL image, numpy array or tensor, or a list of them. Arrays and
                tensors: uint8 (0..255) or float (0..1); (H, W) is one image, (N, H, W) a batch of
                one-channel images, (N, C, H, W) a batch, already at the model's size. Files and
                PIL images go through the image pipeline training read its files with (see
                :meth:`preprocess`); another channel count is converted (said once).
            batch_size: images per forward pass.

        Returns:
            A tensor (N, D).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ParameterError("batch_size", f"must be a whole number of at least 1, got {batch_size!r}")
        chunks = list(_chunks(images, batch_size))
        parts = [
            self.network(self.to_batch(chunk).to(self.device).contiguous(memory_format=torch.channels_last)).cpu()
            for chunk in progress(chunks, desc="embedding", unit="batch")
        ]
        parts = [part for part in parts if len(part)]
        return torch.cat(parts) if parts else torch.empty(0, self.embedding_dim)

    def verify(self, a: ImageLike, b: ImageLike, threshold: float | None = None) -> Verification:
        """Decide whether images ``a`` and ``b`` show the same identity.

        Args:
            a, b: one image each (path, PIL image, array or tensor).
            threshold: the distance threshold; default: the checkpoint's calibration.

        Returns:
            A :class:`Verification`.

        Raises:
            UserError: no threshold given and the checkpoint has no calibration.
        """
        embeddings = self.embed([a, b])
        if len(embeddings) != 2:
            raise ParameterError("a, b", f"must be one image each, got {len(embeddings)} images in all")
        distance = float(torch.linalg.vector_norm(embeddings[0] - embeddings[1]))
        far: float | None = None
        if threshold is not None:
            problem = threshold_problem(threshold)
            if problem:
                raise ParameterError("threshold", problem)
            source = "given"
        else:
            calibration = self.threshold
            if calibration is None:
                raise UserError(
                    f"no threshold: {self.checkpoint} has no calibration ({calibration_path(self.checkpoint).name}). "
                    f"Calibrate it with 'tripletnet evaluate --checkpoint {self.checkpoint}' (threshold at FAR 1e-3 on its "
                    "test split; add --far 1e-2 where the test split is too small for 1e-3) or give a threshold (--threshold)"
                )
            threshold, far, source = calibration.threshold, calibration.far, calibration.describe()
        return Verification(
            # + 0.0: a threshold of -0.0 (which --threshold -0 gives) is printed as 0.0000, not -0.0000.
            distance=distance, same=bool(distance <= threshold), threshold=float(threshold) + 0.0, threshold_source=source,
            far=far,
        )

    def search(self, gallery: Images, queries: Images, k: int = 5) -> Neighbours:
        """The ``k`` nearest gallery images of each query (exact, Euclidean).

        Args:
            gallery: images (anything :meth:`embed` takes; not embeddings). For a large gallery build a
                :class:`tripletnet.inference.index.GalleryIndex` once instead.
            queries: images.
            k: neighbours per query, at most the gallery size.

        Returns:
            :class:`Neighbours` with distances and gallery indices, nearest first.
        """
        from .index import GalleryIndex

        gallery_embeddings = self.embed(gallery)
        if len(gallery_embeddings) == 0:
            raise ParameterError("gallery", "holds no images: there is nothing to search")
        index = GalleryIndex.build(gallery_embeddings, fingerprint=self.fingerprint)
        distances, indices = index.search(self.embed(queries), k)
        return Neighbours(torch.from_numpy(distances), torch.from_numpy(indices))


def load_model(
    checkpoint: str | os.PathLike, log: Logger = log_stderr, device: str = "cpu", state: dict[str, Any] | None = None
) -> TripletModel:
    """Load a tripletnet checkpoint for inference.

    Args:
        checkpoint: a checkpoint file written by ``tripletnet train`` (e.g. ``runs/mnist/last.pt``).
        log: where notes (e.g. channel conversion) go.
        device: where the network runs: ``cpu`` (the default: a few images need no GPU start-up),
            ``cuda``, ``mps`` or ``auto`` (cuda when present); embeddings always come back on the CPU.
        state: the checkpoint's contents when the caller already read them (:func:`load_checkpoint`),
            so that the file is read once.

    Returns:
        A :class:`TripletModel` in eval mode.

    Raises:
        UserError: the file is missing, damaged or not a tripletnet checkpoint.
    """
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise ParameterError("checkpoint", f"must be the path of a checkpoint file, got {type(checkpoint).__name__}")
    path = Path(checkpoint)
    state = state if state is not None else load_checkpoint(path)
    network, config = model_from_checkpoint(state, source=str(path))
    return TripletModel(network, config, path, weights_fingerprint(state["model"]), checkpoint_input_shape(state), log,
                        resolve_device(device))

"""THE image pipeline: how one picture becomes what the network takes, in training and in use alike.

Training data (image folders, CSV lists, images streamed from disk), ``TripletModel.embed`` /
``verify`` / ``search``, ``tripletnet index --images``, the HTML report and the pairs-file evaluation
all call :func:`read_image` (a file) or :func:`prepare_image` (an opened PIL image); nothing else
turns a picture into pixels, so a model sees in use exactly the pixels it was trained on.

The steps, in order
-------------------
1. **Decode** with Pillow, trying only the formats in :data:`PILLOW_FORMATS` whatever a file's name
   says (fewer parsers meet untrusted bytes). A damaged or truncated file, a file that is no image,
   or one over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is a
   :class:`~tripletnet.errors.UserError` naming the file.
2. **Upright**: a camera's EXIF orientation is applied (phone photos); damaged EXIF data keeps the
   pixels as stored.
3. **Size**: the *short* side is resized to ``image_size`` (bilinear, which antialiases when
   shrinking), keeping the aspect ratio (the long side rounded to the nearest pixel, never below
   ``image_size``), then the central ``image_size`` x ``image_size`` square is cut out. Where the
   margin is odd, the extra pixel is cut from the right (or bottom): the crop starts at
   ``(long - image_size) // 2``. A square image is only resized.
4. **Channels and dtype**: uint8, 1 channel (Pillow's ``L``) or 3 (``RGB``). Palettes, 1-bit,
   CMYK and the other colour spaces are converted first. 16-bit (``I;16``), 32-bit (``I``) and float
   (``F``) images are scaled from their own minimum..maximum to 0..255 (Pillow would clip them); a
   float image holding NaN or infinity is refused. Transparency is dropped, not composited: the
   colour values are kept as stored. Grey becomes RGB by replication, colour becomes grey by
   Pillow's ITU-R 601-2 luma.
5. **Normalisation**: ``x / 255``, then ``(x - mean) / std`` per channel with the run's training
   mean and std. The network does this in its forward pass
   (:meth:`~tripletnet.models.EmbeddingNet.set_input_normalization`, restored from the checkpoint's
   ``input`` record), so training, evaluation, ``embed`` and the ONNX / TorchScript exports (which
   take the uint8 output of step 4) all normalise alike.

Which modes are grey (:func:`is_grey`): ``1``, ``L``, ``LA``, ``I``, ``I;16``, ``F`` and palettes
whose colours all have R = G = B. A dataset takes 3 channels if *any* of its images is in colour (no
colour is thrown away) and 1 if all are grey, unless the caller forces a count
(:func:`choose_channels`, said once per dataset); a model takes the count it was trained with.

The mean and std of step 5 are per channel, on the [0, 1] scale, from the training split only,
accumulated in float64 (population standard deviation: :class:`ChannelStats`).

No torch here: the dataset registry imports this module, and the CLI starts without torch.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps

from ..console import Logger, log_stderr
from ..errors import ParameterError, UserError
from ..fileio import special_file_kind

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"})
# Only these decoders are tried, whatever a file's name says: fewer parsers meet untrusted bytes.
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")

def check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ParameterError("image_size", f"must be a positive whole number of pixels, got {image_size!r}")


def check_channels(channels: int | None) -> None:
    if channels is not None and channels not in (1, 3):
        raise ParameterError("channels", f"must be 1 (grey) or 3 (colour), got {channels!r}")


def choose_channels(n_grey: int, n_colour: int, channels: int | None, what: str, log: Logger = log_stderr) -> int:
    """The channel count of a dataset with ``n_grey`` grey and ``n_colour`` colour images.

    Args:
        n_grey: how many images are grey.
        n_colour: how many are in colour.
        channels: 1 or 3 to force a count, None to take it from the data (any colour -> 3).
        what: the dataset's name, for the log line.
        log: where the one line about converted images goes.

    Returns:
        1 or 3.
    """
    check_channels(channels)
    chosen = channels if channels is not None else (3 if n_colour else 1)
    converted = n_grey if chosen == 3 else n_colour
    if converted:
        kind, into = ("grey", "RGB (grey replicated)") if chosen == 3 else ("colour", "grey (luma)")
        mixed = " (the data mixes grey and colour)" if n_grey and n_colour else ""
        log(f"{what}: {converted} of {n_grey + n_colour} images are {kind}, converted to {into}{mixed}")
    return chosen


class ChannelStats:
    """Running per-channel sums of uint8 images, one image at a time: mean/std without holding the images.

    Sums are taken in float64, image by image, so the result does not depend on whether the images
    were held in memory (:func:`~.transforms.channel_mean_std`) or streamed from disk, nor, beyond rounding in
    the last bits, on how many there are.
    """

    def __init__(self, channels: int) -> None:
        self.total = np.zeros(channels, dtype=np.float64)
        self.total_sq = np.zeros(channels, dtype=np.float64)
        self.pixels = 0

    def add(self, image: np.ndarray) -> None:
        """Count one uint8 image (C, H, W)."""
        values = image.reshape(len(self.total), -1).astype(np.float64)
        self.total += values.sum(axis=1)
        self.total_sq += np.square(values).sum(axis=1)
        self.pixels += values.shape[1]

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, population std) per channel on the [0, 1] scale."""
        if not self.pixels:
            raise ParameterError("images", "must hold at least one image to compute a mean and std")
        mean = self.total / self.pixels
        # E[x^2] - E[x]^2 is exact enough here: values are at most 255, the sums are exact integers in float64.
        var = np.maximum(self.total_sq / self.pixels - np.square(mean), 0.0)
        return tuple(float(m) for m in mean / 255.0), tuple(float(s) for s in np.sqrt(var) / 255.0)


_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})  # more than 8 bits: scaled, not clipped
# Modes that cannot be resized as they are, or whose conversion is only defined to L / RGB.
_CONVERT_FIRST = frozenset({"P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"})


def is_grey(img: Image.Image) -> bool:
    """Whether ``img`` carries no colour: a grey mode, or a palette whose colours all have R = G = B."""
    if img.mode in _GREY_MODES:
        return True
    if img.mode in ("P", "PA"):
        palette = img.getpalette() or []
        rgb = np.asarray(palette[: len(palette) - len(palette) % 3], dtype=np.int64).reshape(-1, 3)
        return bool(np.all(rgb == rgb[:, :1]))
    return False


def resized_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """The (width, height) after resizing the short side to ``image_size``, aspect kept."""
    short = min(width, height)
    scale = image_size / short
    # The short side is set exactly, so rounding can never leave it a pixel short of the crop.
    new_w = image_size if width == short else max(image_size, round(width * scale))
    new_h = image_size if height == short else max(image_size, round(height * scale))
    return new_w, new_h


def resize_and_crop(img: Image.Image, image_size: int) -> Image.Image:
    """Step 3: resize the short side to ``image_size`` (bilinear) and cut out the central square."""
    check_image_size(image_size)
    new_w, new_h = resized_size(img.width, img.height, image_size)
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
    return img.crop((left, top, left + image_size, top + image_size))


def to_channels(img: Image.Image, channels: int) -> np.ndarray:
    """Step 4: ``img`` as a uint8 array (channels, H, W): mode ``L`` for 1 channel, ``RGB`` for 3.

    Raises:
        ValueError: a float image holds NaN or infinite values (they have no grey level).
    """
    check_channels(channels)
    if img.mode in _WIDE_MODES:
        # Pillow's convert("L") clips 16-bit and float images; scale their range to 0..255 instead.
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("the float image holds NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
        img = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    target = "L" if channels == 1 else "RGB"
    array = np.asarray(img.convert(target), dtype=np.uint8)
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def upright(img: Image.Image) -> Image.Image:
    """Step 2: the image as it is meant to be seen, a camera's EXIF orientation applied."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - damaged EXIF data: the pixels are still good, keep them as stored
        return img


def prepare_image(img: Image.Image, image_size: int, channels: int) -> np.ndarray:
    """Steps 2-4 on a decoded image: upright, short side resized, centre-cropped, uint8 (channels, S, S).

    Args:
        img: a PIL image (a file's, or one a caller made).
        image_size: the side of the square result.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        uint8 array (channels, image_size, image_size).

    Raises:
        ValueError: the image has no pixels, or is a float image with NaN or infinite values.
    """
    check_image_size(image_size)
    check_channels(channels)
    if img.width < 1 or img.height < 1:
        raise ValueError("the image has no pixels")
    img = upright(img)
    if img.mode in _CONVERT_FIRST:
        img = img.convert("RGB" if channels == 3 else "L")
    return to_channels(resize_and_crop(img, image_size), channels)


@contextlib.contextmanager
def pillow_errors(where: str) -> Iterator[None]:
    """Turn whatever Pillow (or the steps after it) raises on one file into a UserError naming it."""
    with warnings.catch_warnings():
        # Damaged metadata (EXIF, TIFF tags) makes Pillow warn while the pixels may be fine: the
        # pixels decide. Pillow only warns between MAX_IMAGE_PIXELS and twice that: we refuse both alike.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Pillow's own message names its error limit, twice the MAX_IMAGE_PIXELS it warns at: say only the one to raise.
            pixels = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(pixels.group(1)):,} pixels, " if pixels else ""
            raise UserError(
                f"{where}: refused as a possible decompression bomb ({size}over Pillow's limit "
                f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,} pixels)"
            ) from None
        except FileNotFoundError:
            raise UserError(f"{where}: image file not found") from None
        except IsADirectoryError:
            raise UserError(f"{where} is a folder, not an image file") from None
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on damaged files (OSError, ValueError, SyntaxError, struct.error, ...)
            reason = str(exc) or type(exc).__name__
            raise UserError(f"cannot read image {where}: {reason}") from None


def _refuse_special_file(path: str | os.PathLike, where: str) -> None:
    """A FIFO, socket or device is no image file: opening a FIFO would wait for a writer for ever."""
    if special_file_kind(path) is not None:
        raise UserError(f"cannot read image {where}: it is not a regular file (a pipe, socket or device)")


@contextlib.contextmanager
def open_image(path: str | os.PathLike, where: str | None = None) -> Iterator[Image.Image]:
    """Step 1: the decoded image of ``path``; what the caller does with it stays inside the error translation.

    Raises:
        UserError: the file is missing, unreadable, truncated, not an image, or a possible decompression bomb.
    """
    _refuse_special_file(path, where or str(path))
    with pillow_errors(where or str(path)), Image.open(path, formats=PILLOW_FORMATS) as opened:
        opened.load()  # decode here, so a truncated file fails inside the error translation
        yield opened


def probe_image(path: str | os.PathLike, where: str | None = None) -> tuple[int, int, bool]:
    """(width, height, grey) of an image from its header, without decoding the pixels.

    Raises:
        UserError: the file is not an image Pillow can open, or exceeds the decompression-bomb limit.
    """
    _refuse_special_file(path, where or str(path))
    with pillow_errors(where or str(path)), Image.open(path, formats=PILLOW_FORMATS) as img:
        return img.width, img.height, is_grey(img)


def read_image(path: str | os.PathLike, image_size: int, channels: int, where: str | None = None) -> np.ndarray:
    """The whole pipeline up to the network's input on one file: uint8 (channels, image_size, image_size).

    Args:
        path: the image file.
        image_size: the side of the square result (resize the short side, centre-crop).
        channels: 1 (grey) or 3 (RGB).
        where: how to name the image in an error (default: its path).

    Raises:
        UserError: the file is unreadable, truncated, not an image, a possible decompression bomb,
            or a float image holding NaN.
    """
    check_image_size(image_size)
    check_channels(channels)
    with open_image(path, where) as img:
        return prepare_image(img, image_size, channels)

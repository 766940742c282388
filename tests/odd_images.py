"""Image files of every awkward kind the image pipeline must treat alike in training and in use.

Each kind draws an identity's picture (:func:`synthetic_images.draw_identity`) and stores it as
that kind: odd aspect ratios (80 x 40, 40 x 90), JPEGs whose EXIF orientation (6, 8) rotates them,
a palette PNG, a 16-bit grey PNG, RGBA and LA PNGs and a float TIFF.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from synthetic_images import draw_identity

EXIF_ORIENTATION = 0x0112


def _resized(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    return picture.resize(size, Image.Resampling.BILINEAR)


def _jpeg_with_orientation(orientation: int) -> Callable[[Image.Image, Path], Path]:
    def save(picture: Image.Image, path: Path) -> Path:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        target = path.with_suffix(".jpg")
        _resized(picture, (60, 40)).save(target, quality=95, exif=exif)
        return target

    return save


def _png(convert: Callable[[Image.Image], Image.Image]) -> Callable[[Image.Image, Path], Path]:
    def save(picture: Image.Image, path: Path) -> Path:
        target = path.with_suffix(".png")
        convert(picture).save(target)
        return target

    return save


def _grey16(picture: Image.Image) -> Image.Image:
    # A narrow 16-bit range (as a scientific camera gives): the pipeline scales it, Pillow's convert would clip it.
    values = np.asarray(_resized(picture, (50, 64)).convert("L"), dtype=np.uint16) * 40 + 1000
    return Image.fromarray(values.astype(np.uint16))


def _rgba(picture: Image.Image) -> Image.Image:
    image = _resized(picture, (70, 50)).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, image.width, dtype=np.uint8), (image.height, 1))
    image.putalpha(Image.fromarray(alpha))
    return image


def _la(picture: Image.Image) -> Image.Image:
    return _resized(picture, (48, 56)).convert("LA")


def _float_tiff(picture: Image.Image, path: Path) -> Path:
    target = path.with_suffix(".tif")
    values = np.asarray(_resized(picture, (45, 60)).convert("L"), dtype=np.float32) / 255.0 - 0.25
    Image.fromarray(values, mode="F").save(target)
    return target


ODD_KINDS: dict[str, Callable[[Image.Image, Path], Path]] = {
    "wide-80x40": _png(lambda p: _resized(p, (80, 40))),
    "tall-40x90": _png(lambda p: _resized(p, (40, 90))),
    "exif-6": _jpeg_with_orientation(6),
    "exif-8": _jpeg_with_orientation(8),
    "palette": _png(lambda p: _resized(p, (64, 48)).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)),
    "grey-16bit": _png(_grey16),
    "rgba": _png(_rgba),
    "la": _png(_la),
    "float-tiff": _float_tiff,
}


def write_odd_folder(root: Path, n_train: int = 3, n_test: int = 2, seed: int = 0) -> list[Path]:
    """``root/train|test/<identity>/`` holding every odd kind once per identity; returns the files written."""
    rng = np.random.default_rng(seed)
    written = []
    for index in range(n_train + n_test):
        folder = root / ("train" if index < n_train else "test") / f"ident_{index:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for kind, save in ODD_KINDS.items():
            written.append(save(draw_identity(index, rng), folder / kind))
    return written

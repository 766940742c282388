"""Small synthetic identity datasets on disk: colour images of 64x64, one folder per identity.

An identity is a shape (a polygon with 3 to 8 corners, or a disc) in its own colour, with a small
mark whose corner also depends on the identity. Each image of it draws that shape at a jittered
position, size and rotation on a background of random coloured stripes and noise, so that only the
shape and its colour tell identities apart. Files are named as LFW names them,
``<identity>/<identity>_0001.png``, so that LFW-style pairs files can refer to them.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


@dataclass(frozen=True)
class SyntheticDataset:
    root: Path
    train_identities: tuple[str, ...]
    test_identities: tuple[str, ...]
    images_per_identity: int


def identity_name(index: int) -> str:
    return f"ident_{index:03d}"


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    base = rng.integers(0, 256, size=3)
    stripes = rng.integers(0, 256, size=(rng.integers(2, 6), 3))
    rows = np.arange(size)[:, None] + rng.integers(0, size) * np.arange(size)[None, :] / size
    band = (rows // max(1, size // len(stripes))).astype(int) % len(stripes)
    image = 0.5 * base + 0.5 * stripes[band] + rng.normal(0, 12, size=(size, size, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def draw_identity(index: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One image of identity ``index``: its shape and colour, jittered, on a random textured background."""
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    corners = 3 + index % 7  # 3..8 corners; 9 stands for a disc
    hue = (index * 0.61803398875) % 1.0  # golden-ratio steps keep neighbouring identities' hues apart
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.9, 0.95))
    cx, cy = size / 2 + rng.normal(0, size * 0.05, size=2)
    radius = size * rng.uniform(0.28, 0.36)
    angle = rng.uniform(0, 2 * math.pi)
    if corners == 9:
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour, outline=(0, 0, 0))
    else:
        points = [
            (cx + radius * math.cos(angle + 2 * math.pi * k / corners), cy + radius * math.sin(angle + 2 * math.pi * k / corners))
            for k in range(corners)
        ]
        draw.polygon(points, fill=colour, outline=(0, 0, 0))
    mark = (index // 7) % 4  # which quadrant holds the small white mark
    mx = cx + (radius * 0.35 if mark in (1, 2) else -radius * 0.35)
    my = cy + (radius * 0.35 if mark in (2, 3) else -radius * 0.35)
    draw.ellipse((mx - 3, my - 3, mx + 3, my + 3), fill=(255, 255, 255))
    return image


def write_identity_images(
    folder: Path, index: int, count: int, rng: np.random.Generator, size: int = 64, grey: bool = False
) -> None:
    """``count`` images of identity ``index`` in ``folder/<name>/<name>_%04d.png``."""
    name = identity_name(index)
    (folder / name).mkdir(parents=True, exist_ok=True)
    for number in range(1, count + 1):
        image = draw_identity(index, rng, size)
        (image.convert("L") if grey else image).save(folder / name / f"{name}_{number:04d}.png")


def make_synthetic_dataset(
    root: Path,
    n_train: int = 6,
    n_test: int = 4,
    images_per_identity: int = 5,
    size: int = 64,
    seed: int = 0,
    split_folders: bool = True,
) -> SyntheticDataset:
    """Write a dataset with ``n_train`` training and ``n_test`` (disjoint) test identities.

    With ``split_folders`` the layout is ``root/train/<identity>`` and ``root/test/<identity>``;
    without, all identities sit directly in ``root``.
    """
    rng = np.random.default_rng(seed)
    train = tuple(identity_name(i) for i in range(n_train))
    test = tuple(identity_name(i) for i in range(n_train, n_train + n_test))
    for index in range(n_train + n_test):
        split = ("train" if index < n_train else "test") if split_folders else ""
        write_identity_images(root / split if split else root, index, images_per_identity, rng, size)
    return SyntheticDataset(root, train, test, images_per_identity)

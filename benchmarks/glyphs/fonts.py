"""Installed fonts as the benchmark's writers: finding them, what they cover, and drawing one glyph.

A font that lacks a character draws a placeholder (its ``.notdef`` box, or nothing) instead of
failing, so a missing glyph is detected twice: the character must be in the face's character map
(fontTools, which matplotlib already needs), and its drawing must be neither empty nor the drawing
of a code point the face does not map (which FreeType draws as ``.notdef``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from fontTools.ttLib import TTCollection, TTFont, TTLibError
from PIL import Image, ImageDraw, ImageFont

from tripletnet.console import Logger, log_stderr
from tripletnet.errors import UserError

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
# In a collection, the face for simplified Chinese (GB2312) is preferred: Noto CJK's "SC", arphic's "CN".
PREFERRED_FACES = (" SC", " CN", " GB")
# Code points no font is expected to map (the last noncharacters of the private-use planes).
UNMAPPED_CANDIDATES = (0x10FFFF, 0x10FFFE, 0xFFFFF, 0xFFFFE, 0xFFFF)
EM_FRACTION = 0.875  # the font size as a fraction of the image side: a CJK em box fits with a margin


@dataclass(frozen=True)
class FontFace:
    """One face of an installed font file: the benchmark's name for it, and what identifies its version."""

    name: str  # unique among the fonts used; the image file names are ``<name>.png``
    path: Path
    index: int  # face index inside a collection (.ttc), 0 for a plain font
    family: str
    version: str
    sha256: str
    cmap: frozenset[int]

    def covers(self, char: str) -> bool:
        return ord(char) in self.cmap

    def record(self) -> dict[str, object]:
        """What the manifest says about this face."""
        return {"name": self.name, "file": str(self.path), "face_index": self.index, "family": self.family,
                "version": self.version, "sha256": self.sha256}


def _name(font: TTFont, name_id: int) -> str:
    record = font["name"].getDebugName(name_id) if "name" in font else None
    return str(record) if record else ""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _faces(path: Path) -> list[TTFont]:
    if path.suffix.lower() in (".ttc", ".otc"):
        return list(TTCollection(str(path), lazy=True).fonts)
    return [TTFont(str(path), lazy=True)]


def _chosen_face(faces: Sequence[TTFont]) -> int:
    families = [_name(face, 1) for face in faces]
    for marker in PREFERRED_FACES:
        for index, family in enumerate(families):
            if family.endswith(marker) or marker + " " in family:
                return index
    return 0


def load_face(path: str | Path, index: int | None = None, name: str | None = None) -> FontFace:
    """Read one face of a font file (``index`` None: the collection's simplified-Chinese face, else the first)."""
    path = Path(path)
    try:
        faces = _faces(path)
        chosen = _chosen_face(faces) if index is None else index
        face = faces[chosen]
        cmap = face.getBestCmap() or {}
        family, version = _name(face, 4) or _name(face, 1), _name(face, 5)
    except (OSError, IndexError, KeyError, AssertionError, ValueError, TTLibError) as exc:
        raise UserError(f"cannot read font {path}: {exc}") from None
    return FontFace(name or path.stem, path, chosen, family, version, _file_sha256(path), frozenset(cmap))


def font_files(dirs: Iterable[str | Path] = FONT_DIRS) -> list[Path]:
    """Every font file under ``dirs`` (files or folders), sorted, each once."""
    found: set[Path] = set()
    for entry in dirs:
        root = Path(entry).expanduser()
        if root.is_file():
            found.add(root.resolve())
        elif root.is_dir():
            found.update(p.resolve() for p in root.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file())
    return sorted(found)


def covering_faces(paths: Iterable[Path], chars: Sequence[str], min_coverage: float,
                   log: Logger = log_stderr) -> list[FontFace]:
    """The faces whose character map holds at least ``min_coverage`` of ``chars``, named uniquely by file stem.

    A file that is no readable font is left out with a note (one broken file in ``~/.fonts`` must not
    stop a build). A face found twice (a copy of a system font in ``~/.fonts``) is one writer, used once:
    as two, one copy could be a training font and the other a "never seen" test font.
    """
    faces: list[FontFace] = []
    wanted = {ord(c) for c in chars}
    first_path: dict[tuple[str, int], Path] = {}
    for path in paths:
        try:
            face = load_face(path)
        except UserError as exc:
            log(f"note: {exc}; left out")
            continue
        if (face.sha256, face.index) in first_path:
            log(f"note: {path} is the same font as {first_path[face.sha256, face.index]}; used once")
            continue
        first_path[face.sha256, face.index] = path
        if len(wanted & face.cmap) >= min_coverage * len(wanted):
            faces.append(face)
    taken: dict[str, int] = {}
    named = []
    for face in faces:
        count = taken.get(face.name, 0)
        taken[face.name] = count + 1
        named.append(face if count == 0 else dataclasses.replace(face, name=f"{face.name}-{count}"))
    return named


class GlyphRenderer:
    """Draws characters of one face, white on black, centred on their ink, ``size`` x ``size`` grey."""

    def __init__(self, face: FontFace, size: int) -> None:
        self.face = face
        self.size = size
        # BASIC layout: no text shaping library in the way, so the pixels depend on FreeType alone.
        self.font = ImageFont.truetype(str(face.path), round(size * EM_FRACTION), index=face.index,
                                       layout_engine=ImageFont.Layout.BASIC)

    def draw(self, char: str) -> np.ndarray:
        """The character's (size, size) uint8 image; all zero when the face draws nothing for it."""
        image = Image.new("L", (self.size, self.size), 0)
        left, top, right, bottom = self.font.getbbox(char)
        if right > left and bottom > top:
            x = (self.size - (right - left)) // 2 - left
            y = (self.size - (bottom - top)) // 2 - top
            ImageDraw.Draw(image).text((x, y), char, fill=255, font=self.font)
        return np.asarray(image)

    @cached_property
    def notdef(self) -> np.ndarray | None:
        """What the face draws for a code point it does not map (its .notdef), or None if it maps them all."""
        for point in UNMAPPED_CANDIDATES:
            if point not in self.face.cmap:
                return self.draw(chr(point))
        return None

    def is_placeholder(self, char: str, pixels: np.ndarray | None = None) -> bool:
        """Whether the drawing of ``char`` is no glyph: empty, or the same as the .notdef drawing."""
        pixels = self.draw(char) if pixels is None else pixels
        if not pixels.any():
            return True
        return self.notdef is not None and np.array_equal(pixels, self.notdef)

    def glyph(self, char: str) -> np.ndarray | None:
        """The character's image, or None when the face lacks it (not mapped, or drawn as a placeholder)."""
        if not self.face.covers(char):
            return None
        pixels = self.draw(char)
        return None if self.is_placeholder(char, pixels) else pixels


def png_bytes(pixels: np.ndarray) -> bytes:
    """A grey PNG of ``pixels`` with no time stamp or other metadata: the same pixels give the same bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()

"""``python -m benchmarks.glyphs build OUT``: characters (identities) drawn in installed fonts (writers).

Layout (every folder one subfolder per identity, ``U<code point>/<font>.png``, white on black)::

    OUT/train/                          training characters x training fonts
    OUT/test/                           test characters x test fonts (the headline condition: all unseen)
    OUT/conditions/<condition>/         one folder per test condition, with its pairs.csv:
        unseen_chars_seen_fonts/        test characters in the training fonts
        unseen_chars_unseen_fonts/      test characters in the test fonts (the same images as OUT/test)
        seen_chars_unseen_fonts/        training characters (a seeded sample, as many as the test characters) in the test fonts
    OUT/manifest.json                   options, fonts (file, face, family, version, sha256) and every image

``tripletnet train --dataset OUT`` reads train/ and test/ (its test identities are all unseen);
``tripletnet evaluate --checkpoint C --pairs OUT/conditions/<condition>/pairs.csv`` scores one
condition's pairs; ``python -m benchmarks.glyphs run OUT`` scores all three all-pairs and one-shot.

The same fonts, options and seeds give the same bytes: characters and fonts are drawn from seeded
generators over sorted lists, and the PNGs and the manifest carry no time stamps.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tripletnet.console import Logger, log_stderr
from tripletnet.data.pairs import write_pairs_file
from tripletnet.errors import ParameterError, UserError
from tripletnet.fileio import atomic_write_text, ensure_folder, replace_folder

from .fonts import FONT_DIRS, FontFace, GlyphRenderer, covering_faces, font_files, png_bytes

CONDITIONS = ("unseen_chars_seen_fonts", "unseen_chars_unseen_fonts", "seen_chars_unseen_fonts")
SIZES = (32, 64)
MANIFEST = "manifest.json"


def gb2312_level1() -> list[str]:
    """The 3,755 level-1 hanzi of GB2312 (rows 0xB0-0xD7, in GB2312's order: by pinyin)."""
    chars = []
    for row in range(0xB0, 0xD8):
        for cell in range(0xA1, 0xFF):
            if row == 0xD7 and cell > 0xF9:  # row 55 ends at 0xD7F9
                break
            chars.append(bytes([row, cell]).decode("gb2312"))
    return chars


def latin() -> list[str]:
    """Digits and the basic Latin letters: a small set every text font covers (DejaVu on every machine)."""
    return [chr(c) for c in (*range(0x30, 0x3A), *range(0x41, 0x5B), *range(0x61, 0x7B))]


CHARSETS = {"gb2312-1": gb2312_level1, "latin": latin}


def identity_name(char: str) -> str:
    return f"U{ord(char):04X}"


@dataclass(frozen=True)
class BuildOptions:
    """What a build draws; validated on creation.

    Attributes:
        charset: a name in :data:`CHARSETS`.
        chars: characters to use (train + test), drawn from the set with ``seed``; None: all.
        test_chars: how many of them are test characters; None: a fifth, at least 2.
        size: image side in pixels.
        test_fonts / train_fonts: font names (file stems); empty: drawn with ``font_seed``.
        n_test_fonts: with ``test_fonts`` empty, how many fonts are drawn for test; None: a quarter, at least 2.
        font_dirs: files or folders searched for fonts.
        min_coverage: a font is used when its character map holds this share of the character set.
        seed: the draw of the characters and of the seen-character sample.
        font_seed: the draw of the test fonts.
    """

    charset: str = "gb2312-1"
    chars: int | None = None
    test_chars: int | None = None
    size: int = 32
    test_fonts: tuple[str, ...] = ()
    train_fonts: tuple[str, ...] = ()
    n_test_fonts: int | None = None
    font_dirs: tuple[str, ...] = FONT_DIRS
    min_coverage: float = 0.99
    seed: int = 0
    font_seed: int = 0

    def __post_init__(self) -> None:
        if self.charset not in CHARSETS:
            raise ParameterError("charset", f"must be one of {', '.join(CHARSETS)}, got {self.charset!r}")
        if self.size not in SIZES:
            raise ParameterError("size", f"must be one of {', '.join(map(str, SIZES))}, got {self.size}")
        if self.chars is not None and self.chars < 4:
            raise ParameterError("chars", f"must be at least 4 (two train and two test characters), got {self.chars}")
        if self.test_chars is not None and self.test_chars < 2:
            raise ParameterError("test_chars", f"must be at least 2, got {self.test_chars}")
        if self.n_test_fonts is not None and self.n_test_fonts < 2:
            raise ParameterError("n_test_fonts", f"must be at least 2 (a test pair is one character in two fonts), "
                                                 f"got {self.n_test_fonts}")
        for name in ("seed", "font_seed"):
            if getattr(self, name) < 0:
                raise ParameterError(name, f"must be 0 or more, got {getattr(self, name)}")
        if not 0 < self.min_coverage <= 1:
            raise ParameterError("min_coverage", f"must be in (0, 1], got {self.min_coverage}")


def split_fonts(faces: Sequence[FontFace], options: BuildOptions) -> tuple[list[FontFace], list[FontFace]]:
    """(training fonts, test fonts), by name or drawn with ``font_seed``."""
    by_name = {face.name: face for face in faces}
    for name in (*options.test_fonts, *options.train_fonts):
        if name not in by_name:
            raise UserError(f"font {name!r} is not among the fonts that cover the characters: {', '.join(sorted(by_name))}")
    if options.test_fonts:
        test = sorted(options.test_fonts)
    else:
        count = options.n_test_fonts if options.n_test_fonts is not None else max(2, round(len(faces) / 4))
        names = sorted(set(by_name) - set(options.train_fonts))  # named training fonts are never drawn for test
        order = np.random.default_rng(options.font_seed).permutation(len(names))
        test = sorted(names[i] for i in order[:count])
    train = sorted(options.train_fonts) if options.train_fonts else sorted(set(by_name) - set(test))
    if set(train) & set(test):
        raise UserError(f"fonts in both train and test: {', '.join(sorted(set(train) & set(test)))}")
    if len(train) < 2 or len(test) < 2:
        # Two test fonts at least: a test pair of one identity is one character drawn in two of them.
        raise UserError(f"need at least 2 training fonts and 2 test fonts, got {len(train)} and {len(test)} "
                        f"of the {len(faces)} fonts that cover the characters")
    return [by_name[n] for n in train], [by_name[n] for n in test]


@dataclass
class _Drawn:
    """Every character's PNG in every font (None where the font lacks it)."""

    images: dict[tuple[str, str], bytes]

    def complete(self, char: str, fonts: Sequence[FontFace]) -> bool:
        return all((char, face.name) in self.images for face in fonts)


def _draw_all(chars: Sequence[str], fonts: Sequence[FontFace], size: int, log: Logger) -> tuple[_Drawn, int]:
    images: dict[tuple[str, str], bytes] = {}
    placeholders = 0
    for face in fonts:
        renderer = GlyphRenderer(face, size)
        for char in chars:
            pixels = renderer.glyph(char)
            if pixels is None:
                placeholders += 1
            else:
                images[char, face.name] = png_bytes(pixels)
        log(f"drew {len(chars):,} characters in {face.name}")
    return _Drawn(images), placeholders


def _write_folder(root: Path, chars: Sequence[str], fonts: Sequence[FontFace], drawn: _Drawn, split: str,
                  manifest: list[dict[str, object]]) -> None:
    for char in chars:
        folder = ensure_folder(root / identity_name(char))
        for face in fonts:
            (folder / f"{face.name}.png").write_bytes(drawn.images[char, face.name])
            manifest.append({"path": f"{split}/{identity_name(char)}/{face.name}.png", "font": face.name,
                             "codepoint": ord(char), "char": char})


def _pairs(folder: Path, n_identities: int, per_identity: int, seed: int) -> None:
    """A CSV pairs file of the condition: 10 folds disjoint in identities (fewer for a small set)."""
    folds = min(10, n_identities // 2)
    matched_per_fold = (n_identities // folds) * (per_identity * (per_identity - 1) // 2)
    per_fold = 2 * min(300, matched_per_fold)
    if folds < 1 or per_fold < 2:
        return
    write_pairs_file(folder, folder / "pairs.csv", folds=folds, per_fold=per_fold, seed=seed, log=lambda _: None)


def build(out: str | Path, options: BuildOptions, *, overwrite: bool = False, log: Logger = log_stderr) -> dict[str, object]:
    """Render the benchmark into ``out`` (built beside it, then moved into place in one step).

    Returns:
        The manifest's summary (counts, fonts), also in ``out/manifest.json``.
    """
    target = Path(out).expanduser().absolute()
    if target.exists():
        if not overwrite:
            raise UserError(f"{target} exists: give another folder, or --overwrite to replace a previous build")
        if not (target / MANIFEST).is_file():
            raise UserError(f"{target} exists and is not a glyph build (no {MANIFEST}): refusing to replace it")
    staging = target.with_name(f".{target.name}.{secrets.token_hex(6)}.building")
    try:  # before any drawing: an unwritable place is said at once, in the user's words
        staging.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror}") from None
    try:
        return _build_into(staging, target, options, log)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _build_into(staging: Path, target: Path, options: BuildOptions, log: Logger) -> dict[str, object]:
    charset = CHARSETS[options.charset]()
    faces = covering_faces(font_files(options.font_dirs), charset, options.min_coverage, log)
    if len(faces) < 4:
        raise UserError(f"only {len(faces)} fonts cover {options.min_coverage:.0%} of {options.charset} in "
                        f"{', '.join(options.font_dirs)}; the benchmark needs at least 4 (2 train, 2 test)")
    train_fonts, test_fonts = split_fonts(faces, options)
    fonts = train_fonts + test_fonts
    rng = np.random.default_rng(options.seed)
    candidates = [charset[i] for i in rng.permutation(len(charset)) if all(face.covers(charset[i]) for face in fonts)]
    wanted = options.chars if options.chars is not None else len(candidates)
    # A few spares: a character some font draws as a placeholder despite its character map is dropped.
    drawn, placeholders = _draw_all(candidates[: wanted + 16], fonts, options.size, log)
    chars = [c for c in candidates[: wanted + 16] if drawn.complete(c, fonts)][:wanted]
    if len(chars) < wanted:
        log(f"note: --chars {wanted}, but only {len(chars)} characters are drawn by every font: the build has {len(chars)}")
    n_test = options.test_chars if options.test_chars is not None else max(2, round(len(chars) / 5))
    if len(chars) - n_test < 2:
        raise UserError(f"{len(chars)} characters are drawn by every font: "
                        f"too few for {n_test} test characters and 2 training ones")
    test_chars, train_chars = sorted(chars[:n_test]), sorted(chars[n_test:])
    seen_sample = sorted(train_chars[i] for i in rng.permutation(len(train_chars))[: min(n_test, len(train_chars))])
    layout = {
        "train": (train_chars, train_fonts),
        "test": (test_chars, test_fonts),
        "conditions/unseen_chars_seen_fonts": (test_chars, train_fonts),
        "conditions/unseen_chars_unseen_fonts": (test_chars, test_fonts),
        "conditions/seen_chars_unseen_fonts": (seen_sample, test_fonts),
    }
    images: list[dict[str, object]] = []
    for split, (split_chars, split_fonts_) in layout.items():
        _write_folder(staging / split, split_chars, split_fonts_, drawn, split, images)
        if split.startswith("conditions/"):
            _pairs(staging / split, len(split_chars), len(split_fonts_), options.seed)
    summary: dict[str, object] = {
        "options": dataclasses.asdict(options),
        "fonts": {"train": [f.record() for f in train_fonts], "test": [f.record() for f in test_fonts]},
        "counts": {split: {"identities": len(c), "fonts": len(f), "images": len(c) * len(f)}
                   for split, (c, f) in layout.items()},
        "placeholders_skipped": placeholders,
    }
    atomic_write_text(staging / MANIFEST, json.dumps({**summary, "images": images}, ensure_ascii=False, indent=1,
                                                      sort_keys=True) + "\n")
    replace_folder(staging, target)  # the old build moved aside, not deleted in place: Ctrl-C keeps one whole
    log(f"wrote {target}: {len(train_chars):,} training and {len(test_chars):,} test characters, "
        f"{len(train_fonts)} training and {len(test_fonts)} test fonts, {options.size}px")
    return summary

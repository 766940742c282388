"""The glyph benchmark: drawing, placeholder detection, the build's layout and its determinism.

DejaVu (on every machine: Debian's fonts-dejavu-core) is enough for everything but the CJK check,
which needs fonts-noto-cjk and skips without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmarks.glyphs.build import CONDITIONS, BuildOptions, build, gb2312_level1
from benchmarks.glyphs.fonts import GlyphRenderer, covering_faces, font_files, load_face
from benchmarks.glyphs.score import read_identity_folder

from tripletnet.data.pairs import read_pairs
from tripletnet.errors import ParameterError, UserError

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
NOTO_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
# Five faces of fonts-dejavu-core are enough writers (2 test, 3 train) and keep each build to a second.
DEJAVU_FACES = tuple(str(DEJAVU / f"{name}.ttf")
                     for name in ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSansMono"))
needs_dejavu = pytest.mark.skipif(not all(Path(face).is_file() for face in DEJAVU_FACES),
                                  reason="DejaVu fonts not installed (Debian package fonts-dejavu-core)")


def _tiny(**changes: object) -> BuildOptions:
    values: dict = {"charset": "latin", "chars": 12, "test_chars": 4, "font_dirs": DEJAVU_FACES, "n_test_fonts": 2}
    return BuildOptions(**(values | changes))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_gb2312_level1_has_its_3755_distinct_hanzi() -> None:
    chars = gb2312_level1()
    assert len(chars) == 3755 == len(set(chars))
    assert chars[0] == "啊" and chars[-1] == "座"  # the first and last level-1 characters (by pinyin)
    assert all(0x4E00 <= ord(c) <= 0x9FFF for c in chars)


@needs_dejavu
def test_dejavu_draws_latin_and_lacks_cjk() -> None:
    face = load_face(DEJAVU / "DejaVuSans.ttf")
    renderer = GlyphRenderer(face, 32)
    a = renderer.glyph("A")
    assert a is not None and a.shape == (32, 32) and a.dtype == np.uint8 and a.max() == 255
    assert not face.covers("永") and renderer.glyph("永") is None
    # Without the character map, the drawing alone gives it away: FreeType draws the .notdef box.
    assert renderer.notdef is not None and renderer.notdef.any()
    assert renderer.is_placeholder("永")
    assert not renderer.is_placeholder("A") and not renderer.is_placeholder("B")
    assert renderer.is_placeholder(" ")  # no ink at all is no glyph either


@needs_dejavu
def test_latin_glyph_is_centred_on_its_ink() -> None:
    pixels = GlyphRenderer(load_face(DEJAVU / "DejaVuSans.ttf"), 32).glyph("I")
    assert pixels is not None
    columns = np.flatnonzero(pixels.any(axis=0))
    rows = np.flatnonzero(pixels.any(axis=1))
    assert abs((columns[0] + columns[-1]) / 2 - 15.5) <= 1 and abs((rows[0] + rows[-1]) / 2 - 15.5) <= 1


@pytest.mark.skipif(not NOTO_CJK.is_file(), reason="Noto CJK not installed (Debian package fonts-noto-cjk)")
def test_noto_cjk_simplified_face_draws_hanzi() -> None:
    face = load_face(NOTO_CJK)
    assert face.family.endswith(" SC")
    renderer = GlyphRenderer(face, 32)
    pixels = renderer.glyph("永")
    assert pixels is not None and not renderer.is_placeholder("永", pixels)
    assert not np.array_equal(pixels, renderer.glyph("水"))


@needs_dejavu
def test_build_layout_manifest_and_pairs(tmp_path: Path) -> None:
    out = tmp_path / "glyphs"
    summary = build(out, _tiny(), log=lambda _: None)
    manifest = json.loads((out / "manifest.json").read_text())
    test_fonts = {f["name"] for f in manifest["fonts"]["test"]}
    train_fonts = {f["name"] for f in manifest["fonts"]["train"]}
    assert len(test_fonts) == 2 and len(train_fonts) >= 2 and not test_fonts & train_fonts
    train, test = read_identity_folder(out / "train"), read_identity_folder(out / "test")
    assert len(train.identities) == 8 and len(test.identities) == 4 and not set(train.identities) & set(test.identities)
    assert {p.stem for p in (out / "test").rglob("*.png")} == test_fonts
    assert {p.stem for p in (out / "train").rglob("*.png")} == train_fonts
    seen_fonts = read_identity_folder(out / "conditions" / "unseen_chars_seen_fonts")
    seen_chars = read_identity_folder(out / "conditions" / "seen_chars_unseen_fonts")
    assert seen_fonts.identities == test.identities and set(seen_chars.identities) <= set(train.identities)
    headline = _tree(out / "conditions" / "unseen_chars_unseen_fonts")
    assert _tree(out / "test") == {k: v for k, v in headline.items() if k != "pairs.csv"}
    paths = {image["path"] for image in manifest["images"]}
    assert paths == {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert all(f["sha256"] and f["file"] for f in manifest["fonts"]["train"])
    assert summary["counts"]["train"]["images"] == 8 * len(train_fonts)
    for condition in CONDITIONS:
        pairs = read_pairs(out / "conditions" / condition / "pairs.csv")
        assert len(pairs) > 0 and pairs.same.any() and not pairs.same.all()
    assert not list(tmp_path.glob(".*building"))  # no staging folder left behind


@needs_dejavu
def test_build_is_deterministic_and_seeded(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build(first, _tiny(), log=lambda _: None)
    build(second, _tiny(), log=lambda _: None)
    assert _tree(first) == _tree(second)
    build(other, _tiny(seed=1), log=lambda _: None)
    assert sorted(p.name for p in (other / "test").iterdir()) != sorted(p.name for p in (first / "test").iterdir())


@needs_dejavu
def test_build_refuses_to_replace_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserError, match="not a glyph build"):
        build(tmp_path / "mine", _tiny(), overwrite=True, log=lambda _: None)
    with pytest.raises(UserError, match="exists"):
        build(tmp_path / "mine", _tiny(), log=lambda _: None)
    with pytest.raises(UserError, match="cover"):
        build(tmp_path / "none", _tiny(charset="gb2312-1"), log=lambda _: None)  # DejaVu draws no hanzi


@needs_dejavu
def test_fonts_without_the_charset_are_left_out() -> None:
    files = font_files([DEJAVU])
    assert covering_faces(files, gb2312_level1()[:50], 0.5) == []
    assert len(covering_faces(files, list("ABC"), 1.0)) == len(files)


@needs_dejavu
def test_run_scores_every_condition_and_an_embedding_that_knows_the_identities_scores_one(tmp_path: Path) -> None:
    from benchmarks.glyphs import score

    out = tmp_path / "glyphs"
    build(out, _tiny(chars=30, test_chars=20), log=lambda _: None)
    results = score.run(out, {}, pml_epochs=0, episodes=50, log=lambda _: None)
    assert set(results) == set(CONDITIONS) and all(set(by) == {"raw pixels"} for by in results.values())
    images = read_identity_folder(out / "conditions" / "unseen_chars_seen_fonts")
    perfect = score.score(torch.nn.functional.one_hot(images.labels).float(), images.labels, episodes=50, seed=0)
    assert perfect["P@1"] == perfect["MAP@R"] == perfect["5-way"] == perfect["20-way"] == 1.0 and perfect["EER"] == 0.0
    report = score.markdown(results, out, "python -m benchmarks.glyphs run")
    assert report.count("| raw pixels |") == 3


@needs_dejavu
def test_a_copy_of_a_font_is_one_writer_and_a_file_that_is_no_font_is_left_out(tmp_path: Path) -> None:
    """A copy in ~/.fonts was a second "writer": one copy could train and the other be a never-seen test font."""
    import shutil

    shutil.copy(DEJAVU_FACES[0], tmp_path / "DejaVuSans.ttf")
    (tmp_path / "empty.ttf").write_bytes(b"")
    notes: list[str] = []
    faces = covering_faces([*map(Path, DEJAVU_FACES), tmp_path / "DejaVuSans.ttf", tmp_path / "empty.ttf"], list("AB"), 1.0,
                           log=notes.append)
    assert len(faces) == len(DEJAVU_FACES) and len({face.sha256 for face in faces}) == len(faces)
    assert any("is the same font as" in note for note in notes)
    assert any(note.startswith(f"note: cannot read font {tmp_path / 'empty.ttf'}") for note in notes)


@needs_dejavu
def test_an_interrupted_overwrite_leaves_the_old_build_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old build was deleted in place before the new one moved in: Ctrl-C then lost both."""
    import os

    out = tmp_path / "glyphs"
    build(out, _tiny(), log=lambda _: None)
    before = _tree(out)
    real_replace, moved_aside = os.replace, []

    def interrupted_second_rename(source, destination):
        if str(source).endswith(".building"):  # the new build about to move in, the old one already aside
            moved_aside.extend(p.name for p in tmp_path.iterdir() if p.name.endswith(".old"))
            raise KeyboardInterrupt
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", interrupted_second_rename)
    with pytest.raises(KeyboardInterrupt):
        build(out, _tiny(seed=1), overwrite=True, log=lambda _: None)
    monkeypatch.undo()
    assert len(moved_aside) == 1, "interrupted in the window between the two renames"
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["glyphs"], "nothing left beside it"
    build(out, _tiny(seed=1), overwrite=True, log=lambda _: None)
    assert _tree(out) != before and sorted(p.name for p in tmp_path.iterdir()) == ["glyphs"]


@needs_dejavu
def test_test_fonts_are_two_at_least_and_never_a_named_training_font(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="2 test fonts, got 3 and 1"):  # no test pair holds one character twice
        build(tmp_path / "one", _tiny(test_fonts=("DejaVuSans",), train_fonts=("DejaVuSans-Bold", "DejaVuSerif",
                                                                               "DejaVuSansMono")), log=lambda _: None)
    named = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSerif")
    for font_seed in range(4):  # the test fonts were drawn from all fonts, the named training ones too
        summary = build(tmp_path / f"s{font_seed}", _tiny(train_fonts=named, font_seed=font_seed), log=lambda _: None)
        assert {f["name"] for f in summary["fonts"]["test"]} == {"DejaVuSerif-Bold", "DejaVuSansMono"}  # type: ignore[index]


@needs_dejavu
def test_bad_arguments_are_said_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.glyphs.__main__ import main

    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match="cannot write .*afile/sub: Not a directory"):
        build(tmp_path / "afile" / "sub", _tiny(), log=lambda _: None)
    with pytest.raises(ParameterError, match="must be 0 or more, got -1"):
        _tiny(font_seed=-1)
    build(tmp_path / "g", _tiny(), log=lambda _: None)
    for argv, said in [
        (["run", str(tmp_path / "nosuch")], "is not a glyph build (no manifest.json)"),
        (["run", str(tmp_path / "g"), "--threads", "0"], "--threads must be at least 1"),
        (["run", str(tmp_path / "g"), "--out", str(tmp_path / "report.json")], "give a .md name"),  # it replaced the report
        (["run", str(tmp_path / "g"), "--out", str(tmp_path)], "it is a folder"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err

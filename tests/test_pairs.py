"""Pairs files: the LFW format and CSV pairs, read on good and broken files, and the seeded writer."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthetic_images import identity_name, make_synthetic_dataset
from tripletnet.data.pairs import load_pair_images, read_pairs, write_pairs_file
from tripletnet.errors import ParameterError, UserError


def _quiet(_: str) -> None:
    pass


def _lfw_folder(root: Path, counts: dict[str, int], ext: str = "jpg") -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(1, count + 1):
            Image.new("RGB", (8, 8), (number, 0, 0)).save(root / name / f"{name}_{number:04d}.{ext}")
    return root


def test_the_lfw_format_gives_flags_folds_and_image_paths(tmp_path):
    images = _lfw_folder(tmp_path / "lfw", {"Ann_Lee": 3, "Bo": 2})
    _lfw_folder(images, {"Cy": 1}, ext="png")  # the extension is found per image
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn_Lee\t1\t3\nAnn_Lee\t2\tCy\t1\n\nBo 1 2\nBo  2  Ann_Lee 1\n")
    pairs = read_pairs(tmp_path / "pairs.txt", images)
    assert len(pairs) == 4 and pairs.n_folds == 2
    assert pairs.same.tolist() == [True, False, True, False] and pairs.folds.tolist() == [0, 0, 1, 1]
    assert pairs.lines.tolist() == [2, 3, 5, 6]
    assert pairs.paths_a[0] == images / "Ann_Lee" / "Ann_Lee_0001.jpg" and pairs.paths_b[0].name == "Ann_Lee_0003.jpg"
    assert pairs.paths_b[1] == images / "Cy" / "Cy_0001.png"
    paths, index_a, index_b = pairs.unique_images()
    assert len(paths) == 6 and all(
        paths[index_a[i]] == pairs.paths_a[i] and paths[index_b[i]] == pairs.paths_b[i] for i in range(4)
    )
    loaded, _, _ = load_pair_images(pairs, image_size=4, channels=3, log=_quiet)
    assert loaded.shape == (6, 3, 4, 4)


def test_a_single_count_header_is_one_fold(tmp_path):
    images = _lfw_folder(tmp_path, {"A": 2, "B": 1})
    (tmp_path / "pairs.txt").write_text("1\nA 1 2\nA 1 B 1\n")
    pairs = read_pairs(tmp_path / "pairs.txt")  # images default to the file's folder
    assert pairs.n_folds == 1 and pairs.folds.tolist() == [0, 0] and pairs.paths_b[1] == images / "B" / "B_0001.jpg"


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "is empty"),
        ("ten 300\n", "line 1: the number of folds must be a positive whole number, got 'ten'"),
        ("0 1\n", "line 1: the number of folds must be"),
        ("1 2 3\nA 1 2\n", "line 1: the header must be 'folds pairs_per_fold'"),
        (
            "\n\n1 1\nA 1 2\n",
            "line 3: the header promises 1 folds of 1 matched and 1 mismatched pairs \\(2 pair lines\\), the file has 1",
        ),
        ("1 1\nA 1 2\nA 1\n", "line 3: expected 'name n1 n2' \\(same\\) or 'name1 n1 name2 n2' \\(different\\), found 2 fields"),
        ("1 1\nA 1 2\nA 1 B 1 C\n", "line 3: expected .* found 5 fields"),
        ("1 1\nA 1 x\nA 1 B 1\n", "line 2: an image number must be a positive whole number, got 'x'"),
        ("1 1\nA 1 0\nA 1 B 1\n", "line 2: an image number"),
        ("1 1\n../A 1 2\nA 1 B 1\n", "line 2: '../A' is not an identity name"),
        ("1 1\nA 1 3\nA 1 C 1\n", "2 listed images do not exist .*line 2: A/A_0003.\\*; line 3: C/C_0001.\\*"),
    ],
)
def test_broken_lfw_files_are_named_by_line(tmp_path, text, message):
    _lfw_folder(tmp_path, {"A": 2, "B": 1})
    (tmp_path / "pairs.txt").write_text(text)
    with pytest.raises(UserError, match=message):
        read_pairs(tmp_path / "pairs.txt")


def test_csv_pairs_with_and_without_folds(tmp_path):
    _lfw_folder(tmp_path / "img", {"A": 2, "B": 1})
    (tmp_path / "img" / "pairs.csv").write_text(
        "path_a,path_b,same,fold\nA/A_0001.jpg,A/A_0002.jpg,1,4\nA/A_0001.jpg,B/B_0001.jpg,false,7\n"
    )
    pairs = read_pairs(tmp_path / "img" / "pairs.csv")
    assert pairs.same.tolist() == [True, False] and pairs.folds.tolist() == [0, 1] and pairs.n_folds == 2
    rows = "".join(f"A/A_0001.jpg,{'A/A_0002.jpg,same' if k % 2 else 'B/B_0001.jpg,different'}\n" for k in range(30))
    (tmp_path / "dealt.csv").write_text(rows)
    dealt = read_pairs(tmp_path / "dealt.csv", tmp_path / "img")
    assert dealt.n_folds == 10
    for fold in range(10):
        in_fold = dealt.same[dealt.folds == fold]
        assert in_fold.sum() == len(in_fold) - in_fold.sum() or abs(2 * int(in_fold.sum()) - len(in_fold)) <= 1


@pytest.mark.parametrize(
    "text,message",
    [
        ("A/A_0001.jpg,A/A_0002.jpg,maybe\n", "line 1: same must be"),
        ("A/A_0001.jpg,A/A_0002.jpg\n", "line 1: expected path_a,path_b,same .* found 2 fields"),
        ("A/A_0001.jpg,A/A_0002.jpg,1,0\nA/A_0001.jpg,B/B_0001.jpg,0\n", "line 2: expected path_a,path_b,same,fold"),
        ("A/A_0001.jpg,A/A_0002.jpg,1,x\n", "line 1: fold must be a whole number"),
        ("A/A_0001.jpg,,1\n", "line 1: empty image path"),
        ("path_a,path_b,same\n", "lists no pairs"),
        (
            "A/A_0001.jpg,A/nope.jpg,1\nA/A_0001.jpg,B/gone.jpg,0\n",
            "2 listed images do not exist .*line 1: A/nope.jpg; line 2: B/gone.jpg",
        ),
    ],
)
def test_broken_csv_pairs_are_named_by_line(tmp_path, text, message):
    _lfw_folder(tmp_path, {"A": 2, "B": 1})
    (tmp_path / "pairs.csv").write_text(text)
    with pytest.raises(UserError, match=message):
        read_pairs(tmp_path / "pairs.csv")


def test_the_writer_draws_balanced_distinct_pairs_in_identity_disjoint_folds(tmp_path):
    make_synthetic_dataset(tmp_path / "faces", n_train=0, n_test=12, images_per_identity=4, size=16)
    images = tmp_path / "faces" / "test"
    _lfw_folder(images, {"solo": 1}, ext="png")  # a single image: mismatched pairs only
    pairs = write_pairs_file(images, tmp_path / "pairs.txt", folds=4, per_fold=8, seed=3, log=_quiet)
    assert (tmp_path / "pairs.txt").read_text().splitlines()[0] == "4\t4"
    assert len(pairs) == 32 and pairs.n_folds == 4
    identity_folds: dict[str, set[int]] = {}
    for fold in range(4):
        in_fold = pairs.folds == fold
        assert pairs.same[in_fold].sum() == 4 and (~pairs.same[in_fold]).sum() == 4
    for a, b, same, fold in zip(pairs.paths_a, pairs.paths_b, pairs.same, pairs.folds, strict=True):
        assert (a.parent == b.parent) == same and a != b
        for path in (a, b):
            identity_folds.setdefault(path.parent.name, set()).add(int(fold))
        if same:
            assert a.parent.name != "solo"
    assert all(len(f) == 1 for f in identity_folds.values()), "every identity lies in one fold"
    assert len({frozenset(p) for p in zip(pairs.paths_a, pairs.paths_b, strict=True)}) == 32, "no pair twice"
    again = write_pairs_file(images, tmp_path / "again.txt", folds=4, per_fold=8, seed=3, log=_quiet)
    assert (tmp_path / "again.txt").read_text() == (tmp_path / "pairs.txt").read_text() and len(again) == 32
    write_pairs_file(images, tmp_path / "other.txt", folds=4, per_fold=8, seed=4, log=_quiet)
    assert (tmp_path / "other.txt").read_text() != (tmp_path / "pairs.txt").read_text()
    as_csv = write_pairs_file(images, tmp_path / "pairs.csv", folds=4, per_fold=8, seed=3, log=_quiet)
    assert (tmp_path / "pairs.csv").read_text().startswith("path_a,path_b,same,fold\n")
    assert as_csv.paths_a == pairs.paths_a and np.array_equal(as_csv.folds, pairs.folds)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.txt", "faces", "other.txt", "pairs.csv", "pairs.txt"]


def test_the_writer_refuses_what_it_cannot_draw(tmp_path):
    images = _lfw_folder(tmp_path / "img", {identity_name(i): 2 for i in range(4)})
    out = tmp_path / "pairs.txt"
    with pytest.raises(UserError, match="4 identities; 3 folds disjoint in identities need at least 6 .*: at most 2 folds"):
        write_pairs_file(images, out, folds=3, per_fold=2, log=_quiet)
    few = _lfw_folder(tmp_path / "few", {identity_name(i): 2 for i in range(3)})
    with pytest.raises(UserError, match="3 identities; .*: a pairs file needs at least 4 \\(two folds\\)"):
        write_pairs_file(few, out, folds=2, per_fold=2, log=_quiet)
    with pytest.raises(UserError, match="can form only 2 distinct matched .* 3 needed"):
        write_pairs_file(images, out, folds=2, per_fold=6, log=_quiet)
    with pytest.raises(ParameterError, match="per_fold"):
        write_pairs_file(images, out, folds=2, per_fold=3, log=_quiet)
    with pytest.raises(ParameterError, match="folds"):
        write_pairs_file(images, out, folds=0, log=_quiet)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["few", "img"]  # nothing written beside the folders
    (images / identity_name(0) / "holiday.jpg").write_bytes(
        (images / identity_name(0) / f"{identity_name(0)}_0001.jpg").read_bytes()
    )
    with pytest.raises(UserError, match="holiday.jpg is not named as LFW names images .* CSV"):
        write_pairs_file(images, out, folds=1, per_fold=2, log=_quiet)
    assert len(write_pairs_file(images, tmp_path / "pairs.csv", folds=1, per_fold=2, log=_quiet)) == 2
    split = tmp_path / "split"
    make_synthetic_dataset(split, n_train=2, n_test=2, images_per_identity=2, size=8)
    with pytest.raises(UserError, match="give the split"):
        write_pairs_file(split, out, folds=1, per_fold=2, log=_quiet)


@pytest.mark.parametrize("counts", [[3, 1], [1, 1], [2, 3, 4], [1, 5, 1, 2], [7]])
def test_pair_numbers_map_one_to_one_onto_all_distinct_pairs(counts):
    from tripletnet.data.pairs import _PairIndex

    index = _PairIndex(np.array(counts, dtype=np.int64))
    same = {index.same(n) for n in range(index.n_same)}
    different = {index.different(n) for n in range(index.n_different)}
    expected_same = {(k, i, k, j) for k, n in enumerate(counts) for i in range(n) for j in range(i + 1, n)}
    expected_different = {(a, i, b, j) for a, na in enumerate(counts) for b, nb in enumerate(counts) if a < b
                          for i in range(na) for j in range(nb)}
    assert same == expected_same and index.n_same == len(expected_same)
    assert different == expected_different and index.n_different == len(expected_different)


@pytest.mark.parametrize("name", ["pairs.csv", "pairs.txt"])
def test_a_pairs_file_written_beside_its_images_folder_says_how_to_read_it_back(tmp_path, name):
    make_synthetic_dataset(tmp_path / "faces", n_train=0, n_test=8, images_per_identity=4, size=16)
    images = tmp_path / "faces" / "test"
    lines: list[str] = []
    write_pairs_file(images, tmp_path / name, folds=2, per_fold=8, seed=0, log=lines.append)
    assert f"evaluate it with --pairs {tmp_path / name} --images {images}" in lines[-1]
    with pytest.raises(UserError, match=r"do not exist in .*give it with --images"):
        read_pairs(tmp_path / name)  # beside the file, where the names are not
    assert len(read_pairs(tmp_path / name, images)) == 16
    lines.clear()
    write_pairs_file(images, images / name, folds=2, per_fold=8, seed=0, log=lines.append)
    assert "--images" not in lines[-1]  # read beside itself, as evaluate does by default

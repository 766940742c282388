"""CSV image lists: path,label[,split] rows, header optional, and every bad row with its line number."""

from pathlib import Path

import pytest
import torch

from synthetic_images import identity_name, make_synthetic_dataset
from tripletnet.data.csv import load_csv_dataset, read_image_list_csv
from tripletnet.data.folder import ImageOptions, load_image_folder
from tripletnet.errors import UserError


def _quiet(_: str) -> None:
    pass


def _listing(root: Path) -> list[tuple[str, str, str]]:
    """(path relative to root, identity, split) of every image of a synthetic dataset with split folders."""
    return [(p.relative_to(root).as_posix(), p.parent.name, p.parts[-3]) for p in sorted(root.glob("*/*/*.png"))]


def test_a_csv_with_splits_loads_the_same_images_as_the_folder(tmp_path):
    make_synthetic_dataset(tmp_path / "images", n_train=3, n_test=2, images_per_identity=3)
    rows = _listing(tmp_path / "images")
    (tmp_path / "list.csv").write_text("path,label,split\n" + "".join(f"images/{p},{i},{s}\n" for p, i, s in rows))
    from_csv = load_csv_dataset(tmp_path / "list.csv", log=_quiet)
    from_folder = load_image_folder(tmp_path / "images", log=_quiet)
    assert from_csv.class_names == from_folder.class_names and from_csv.name == "list"
    assert torch.equal(from_csv.train_images, from_folder.train_images) and torch.equal(
        from_csv.test_labels, from_folder.test_labels
    )
    assert from_csv.train_paths[0] == f"images/train/{identity_name(0)}/{identity_name(0)}_0001.png"
    assert (from_csv.mean, from_csv.split) == (from_folder.mean, "given")


def test_a_csv_without_header_or_splits_is_split_by_identity_like_a_folder(tmp_path):
    make_synthetic_dataset(tmp_path, n_train=10, n_test=0, images_per_identity=3, split_folders=False)
    rows = [(p.relative_to(tmp_path).as_posix(), p.parent.name) for p in sorted(tmp_path.glob("*/*.png"))]
    (tmp_path / "list.csv").write_text("\n".join(f" {p} , {i} " for p, i in rows) + "\n\n")  # spaces and blank lines are fine
    data = load_csv_dataset(tmp_path / "list.csv", log=_quiet)
    assert data.split == "identity" and len(data.train_labels) + len(data.test_labels) == 30
    train = {data.class_names[i] for i in data.train_labels.tolist()}
    test = {data.class_names[i] for i in data.test_labels.tolist()}
    assert not train & test and len(test) == 2
    by_image = load_csv_dataset(tmp_path / "list.csv", ImageOptions(split_by="image", image_size=28), log=_quiet)
    assert by_image.split == "image" and by_image.train_images.shape[1:] == (3, 28, 28)


@pytest.mark.parametrize("text,message", [
    ("a.png,x\nb.png\n", "line 2: expected path,label or path,label,split, found 1 field$"),
    ("path;label\na.png;x\n", "line 1: .*found 1 field \\(the row is separated by ';': the list must be comma-separated\\)"),
    ("a.png,x,train\nb.png,y,train,extra\n", "line 2: expected path,label"),
    ("path,label,split\na.png,x,train\nb.png,y\n", "line 3: no split column, unlike line 2"),
    ("a.png,x\n\nb.png,y,test\n", "line 3: a split column, unlike line 1"),
    ("a.png,x,train\nb.png,y,validation\n", "line 2: unknown split 'validation'"),
    ("a.png,x\n,y\n", "line 2: empty path"),
    ("a.png, \n", "line 1: empty label"),
    ("path,label\n", "lists no images"),
    ("", "lists no images"),
    ('a.png,"x\n', "not valid CSV"),
])
def test_bad_rows_are_named_by_line(tmp_path, text, message):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(UserError, match=message):
        read_image_list_csv(tmp_path / "list.csv")


def test_missing_images_are_counted_and_the_first_named_by_line(tmp_path):
    (tmp_path / "here.png").write_bytes(b"")
    lines = ["here.png,a"] + [f"gone{i}.png,b" for i in range(5)]
    (tmp_path / "list.csv").write_text("\n".join(lines))
    with pytest.raises(
        UserError, match=r"5 listed images do not exist .*line 2: gone0.png; line 3: gone1.png; line 4: gone2.png; \.\.\."
    ):
        read_image_list_csv(tmp_path / "list.csv")


def test_an_unreadable_csv_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_image_list_csv(tmp_path / "none.csv")
    (tmp_path / "latin1.csv").write_bytes("caf\xe9.png,x\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_image_list_csv(tmp_path / "latin1.csv")
    with pytest.raises(UserError, match="cannot read"):
        read_image_list_csv(tmp_path)


def test_a_bad_image_in_the_list_is_named_with_its_line(tmp_path):
    make_synthetic_dataset(tmp_path, n_train=2, n_test=2, images_per_identity=2)
    rows = _listing(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"junk")
    (tmp_path / "list.csv").write_text("".join(f"{p},{i},{s}\n" for p, i, s in rows) + "bad.png,x,train\n")
    with pytest.raises(UserError, match=f"list.csv line {len(rows) + 1} \\(bad.png\\)"):
        load_csv_dataset(tmp_path / "list.csv", log=_quiet)

"""Data layer: IDX parsing, checksums, download, layouts, subsets, image folders. Never the network."""

import dataclasses
import gzip
import shutil
import struct
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from tripletnet.data import DATASET_SPECS, load_dataset, load_image_folder, read_idx, stratified_subset
from tripletnet.data.datasets import load_registered
from tripletnet.errors import UserError

from _mnist import SHARED, data_root, mnist

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reader_reads_raw_and_gzipped(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = _idx_bytes(array)
    path = tmp_path / "x-idx3-ubyte"  # no .gz suffix even when compressed: detected by content
    path.write_bytes(gzip.compress(data) if compress else data)
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize(
    "mangle,needle",
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b[:6], "truncated"),
        (lambda b: b + b"\x00", "longer than its header"),
        (lambda b: b"\x01" + b[1:], "bad magic"),
        (lambda b: b[:2] + b"\x42" + b[3:], "unknown IDX data type"),
    ],
)
def test_idx_reader_rejects_damaged_files(tmp_path, mangle, needle):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(mangle(_idx_bytes(np.arange(10, dtype=np.uint8))))
    with pytest.raises(UserError, match=needle) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_a_damaged_gzip_is_named(tmp_path):
    path = tmp_path / "labels.gz"
    good = gzip.compress(_idx_bytes(np.arange(1000, dtype=np.uint8)))
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="damaged gzip"):
        read_idx(path)


def _copy_mnist(dest, layout="subfolder", compress=True):
    target = dest / "mnist" if layout == "subfolder" else dest
    target.mkdir(parents=True, exist_ok=True)
    for source in (SHARED / "mnist").glob("*.gz"):
        if compress:
            shutil.copy(source, target / source.name)
        else:
            (target / source.name[:-3]).write_bytes(gzip.decompress(source.read_bytes()))
    return target


@pytest.mark.parametrize("layout,compress", [("subfolder", True), ("flat", False)])
def test_both_layouts_and_both_encodings_load(tmp_path, layout, compress):
    _copy_mnist(tmp_path, layout, compress)
    data = load_dataset("mnist", str(tmp_path), download=False)
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)


def test_real_mnist_and_fashion_mnist_load_with_known_counts():
    data = mnist()
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert torch.bincount(data.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert len(data.test_labels) == 10000 and int(data.test_labels.max()) == 9
    fashion = load_dataset("fashion-mnist", data_root(), download=False)
    assert torch.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert fashion.class_names[9] == "Ankle boot"
    assert not torch.equal(fashion.test_images[:10], data.test_images[:10])


def test_checksum_mismatch_names_the_file_and_both_digests(tmp_path):
    target = _copy_mnist(tmp_path)
    labels = target / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[100] ^= 0xFF  # one flipped label: still a valid IDX file, silently wrong data
    labels.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(UserError, match="sha256") as info:
        load_dataset("mnist", str(tmp_path), download=False)
    message = str(info.value)
    assert str(labels) in message and DATASET_SPECS["mnist"].files["test_labels"].sha256 in message


def _offline(*args, **kwargs):
    raise urllib.error.URLError("offline")


def test_missing_files_offline_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("tripletnet.data.download.time.sleep", lambda s: None)
    with pytest.raises(UserError) as info:
        load_registered(DATASET_SPECS["mnist"], str(tmp_path), download=True, progress=lambda m: None, opener=_offline)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "mnist") in message
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "no partial download left behind"


def test_missing_files_without_download_say_where_to_put_them(tmp_path):
    with pytest.raises(UserError, match="missing") as info:
        load_dataset("mnist", str(tmp_path), download=False)
    assert str(tmp_path) in str(info.value)


def test_download_falls_through_a_bad_mirror_and_verifies(tmp_path, monkeypatch):
    monkeypatch.setattr("tripletnet.data.download.time.sleep", lambda s: None)
    spec = dataclasses.replace(
        DATASET_SPECS["mnist"],
        mirrors=((tmp_path / "nowhere").as_uri() + "/", (SHARED / "mnist").as_uri() + "/"),
    )
    root = tmp_path / "data"
    data = load_registered(spec, str(root), download=True, progress=lambda m: None)
    assert torch.bincount(data.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(p.name for p in (SHARED / "mnist").glob("*.gz"))


def test_a_mirror_serving_wrong_content_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr("tripletnet.data.download.time.sleep", lambda s: None)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for source in (SHARED / "fashion-mnist").glob("*.gz"):  # right names, other dataset's content
        shutil.copy(source, wrong / source.name)
    spec = dataclasses.replace(DATASET_SPECS["mnist"], mirrors=(wrong.as_uri() + "/",))
    with pytest.raises(UserError, match="checksum"):
        load_registered(spec, str(tmp_path / "data"), download=True, progress=lambda m: None)
    assert not list((tmp_path / "data").rglob("*.gz"))


def test_stratified_subset_keeps_class_shares_exactly_and_reproducibly():
    labels = mnist().train_labels
    subset = stratified_subset(labels, 5000, seed=3)
    assert len(subset) == 5000 and len(torch.unique(subset)) == 5000
    counts = torch.bincount(labels[subset], minlength=10).double()
    ideal = torch.tensor(MNIST_TRAIN_COUNTS, dtype=torch.float64) * 5000 / 60000
    assert (counts - ideal).abs().max() < 1
    assert torch.equal(subset, stratified_subset(labels, 5000, seed=3))
    assert not torch.equal(subset, stratified_subset(labels, 5000, seed=4))
    assert torch.equal(stratified_subset(labels, 60000, seed=0), torch.arange(60000))


@pytest.mark.parametrize("n", [0, -1, 60001])
def test_stratified_subset_rejects_impossible_sizes(n):
    with pytest.raises(UserError, match="--num_images"):
        stratified_subset(mnist().train_labels, n, seed=0)


def _write_images(folder, count, value):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((40, 30, 3), value + i, dtype=np.uint8)).save(folder / f"{i}.png")


def test_image_folder_loads_as_28x28_grayscale_with_a_stratified_split(tmp_path):
    _write_images(tmp_path / "cats", 10, 10)
    _write_images(tmp_path / "dogs", 5, 200)
    data = load_image_folder(tmp_path)
    assert data.class_names == ("cats", "dogs")
    assert data.train_images.shape[1:] == (28, 28) and data.train_images.dtype == torch.uint8
    assert len(data.train_labels) + len(data.test_labels) == 15
    assert torch.bincount(data.test_labels).tolist() == [2, 1]
    assert int(data.train_images[data.train_labels == 1].min()) >= 200


def test_image_folder_with_explicit_splits_and_through_load_dataset(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        _write_images(tmp_path / split / "a", n, 0)
        _write_images(tmp_path / split / "b", n, 100)
    data = load_dataset(str(tmp_path))
    assert len(data.train_labels) == 8 and len(data.test_labels) == 4


def test_image_folder_mistakes_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="two class subfolders"):
        load_image_folder(tmp_path)
    _write_images(tmp_path / "a", 3, 0)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="broken.png"):
        load_image_folder(tmp_path)
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("imagenet-28")

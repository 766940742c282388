"""Data layer: IDX parsing, checksums and their cache, downloads, layouts, subsets, image folders.

Never the network: downloads go to an http.server on 127.0.0.1 or to a monkeypatched urlopen.
"""

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import shutil
import struct
import threading
import time
import urllib.error
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from tripletnet.data import (
    DATA_ENV,
    DATASET_SPECS,
    DATASETS,
    DatasetSplits,
    PathKind,
    load_dataset,
    read_idx,
    resolve_data_root,
    stratified_subset,
)
from tripletnet.data import datasets as datasets_module
from tripletnet.data import download as download_module
from tripletnet.data.csv import load_csv_dataset
from tripletnet.data.datasets import CSV_FILE, DatasetSpec, has_suffix, load_registered
from tripletnet.data.folder import ImageOptions
from tripletnet.errors import ParameterError, UserError
from tripletnet.fileio import WriteError

from _mnist import data_root, mnist

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST = DATASET_SPECS["mnist"]
LABEL_FILES = ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IMAGE_FILES = ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")


def shared(dataset: str) -> Path:
    return Path(data_root()) / dataset


def _idx_bytes(array: np.ndarray, type_code: int = 0x08, dtype: str = ">u1") -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def _files_on_disk(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]


@pytest.fixture(autouse=True)
def _no_retry_pauses(monkeypatch):
    monkeypatch.setattr(download_module, "RETRY_DELAYS_S", (0.0, 0.0))


# --- IDX reader ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reader_reads_raw_and_gzipped(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = _idx_bytes(array)
    path = tmp_path / "x-idx3-ubyte"  # no .gz suffix even when compressed: detected by content
    path.write_bytes(gzip.compress(data) if compress else data)
    result = read_idx(path)
    assert result.dtype == np.uint8 and result.shape == (2, 3, 4)
    np.testing.assert_array_equal(result, array)


def test_idx_reader_decodes_big_endian_multibyte_types(tmp_path):
    array = np.array([[1, -2, 70000], [2**31 - 1, 0, -(2**31)]], dtype=np.int64)
    path = tmp_path / "ints.gz"  # a .gz name on a raw file: content decides, not the name
    path.write_bytes(_idx_bytes(array, 0x0C, ">i4"))
    result = read_idx(path)
    assert result.dtype == np.int32 and result.dtype.isnative
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize(
    "mangle,needle",
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b[:6], "truncated: its IDX header"),
        (lambda b: b[:3], "truncated"),
        (lambda b: b"", "empty"),
        (lambda b: b + b"\x00", "longer than its header"),
        (lambda b: b"\x01" + b[1:], "bad magic"),
        (lambda b: b[:2] + b"\x42" + b[3:], "unknown IDX data type 0x42"),
        (lambda b: b[:3] + b"\x00" + b[4:], "zero dimensions"),
        (lambda b: b[:4] + struct.pack(">I", 2**32 - 1) + b[8:], "truncated"),
    ],
)
def test_idx_reader_rejects_damaged_files(tmp_path, mangle, needle):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(mangle(_idx_bytes(np.arange(10, dtype=np.uint8))))
    with pytest.raises(UserError, match=needle) as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_gzip_is_named(tmp_path, damage):
    path = tmp_path / "labels.gz"
    good = gzip.compress(_idx_bytes(np.arange(1000, dtype=np.uint8) % 251))
    if damage == "truncated":
        bad = good[: len(good) // 2]
    else:  # a flipped byte in the CRC trailer: the stream inflates but its checksum does not match
        bad = good[:-8] + bytes([good[-8] ^ 0xFF]) + good[-7:]
    path.write_bytes(bad)
    with pytest.raises(UserError, match="damaged gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


# --- data root and layouts ----------------------------------------------------------------------


def test_data_root_prefers_the_argument_then_the_environment_then_dot_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert resolve_data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv(DATA_ENV)
    assert resolve_data_root(None) == tmp_path / "data"


def _place_mnist(folder: Path, compress_labels: bool = True) -> Path:
    """Images linked from the shared copy (gzipped); labels copied, gzipped or raw."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in IMAGE_FILES:
        (folder / name).symlink_to(shared("mnist") / name)
    for name in LABEL_FILES:
        source = shared("mnist") / name
        if compress_labels:
            shutil.copyfile(source, folder / name)
        else:
            (folder / name[:-3]).write_bytes(gzip.decompress(source.read_bytes()))
    return folder


@pytest.mark.parametrize(
    "subfolder,compress_labels",
    [("mnist", True), ("", False), ("MNIST/raw", False)],
    ids=["per-dataset-gz", "flat-raw", "torchvision-style-raw"],
)
def test_every_layout_and_both_encodings_load(tmp_path, subfolder, compress_labels):
    _place_mnist(tmp_path / subfolder if subfolder else tmp_path, compress_labels)
    data = load_dataset("mnist", str(tmp_path), download=False)
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert torch.bincount(data.test_labels).tolist() == MNIST_TEST_COUNTS


def test_fully_raw_files_load_like_the_gzipped_ones(tmp_path):
    for name in (*IMAGE_FILES, *LABEL_FILES):
        (tmp_path / name[:-3]).write_bytes(gzip.decompress((shared("mnist") / name).read_bytes()))
    data = load_dataset("mnist", str(tmp_path), download=False)
    assert torch.equal(data.test_images, mnist().test_images)
    assert torch.equal(data.train_labels, mnist().train_labels)


def test_data_root_comes_from_the_environment(tmp_path, monkeypatch):
    _place_mnist(tmp_path / "mnist")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert torch.equal(load_dataset("mnist", download=False).test_labels, mnist().test_labels)


# --- the real datasets --------------------------------------------------------------------------


def test_real_mnist_loads_with_known_shapes_types_and_counts():
    data = mnist()
    assert isinstance(data, DatasetSplits) and data.name == "mnist"
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert torch.bincount(data.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(data.test_labels).tolist() == MNIST_TEST_COUNTS
    assert data.class_names == tuple("0123456789")
    assert int(data.train_images.max()) == 255 and data.train_images.float().mean().item() == pytest.approx(33.3, abs=0.1)


def test_real_fashion_mnist_loads_with_its_class_names():
    data = load_dataset("fashion-mnist", data_root(), download=False)
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert data.train_images.dtype == torch.uint8 and data.test_labels.dtype == torch.int64
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.class_names == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )
    assert not torch.equal(data.test_images[:10], mnist().test_images[:10])


def test_unknown_dataset_is_a_parameter_error_listing_the_registry_choices(tmp_path):
    with pytest.raises(ParameterError, match="got 'imagenet-28'") as info:
        load_dataset("imagenet-28")
    assert info.value.parameter == "dataset"
    assert DATASETS.describe() in str(info.value)
    assert "mnist" in str(info.value) and "fashion-mnist" in str(info.value)
    a_file = tmp_path / "mnist.txt"
    a_file.write_text("not a folder")
    with pytest.raises(ParameterError, match="mnist.txt"):
        load_dataset(str(a_file))


# --- checksums ----------------------------------------------------------------------------------


def test_checksum_mismatch_names_the_file_both_digests_and_the_remedy(tmp_path):
    target = _place_mnist(tmp_path / "mnist")
    labels = target / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[100] ^= 0x01  # one changed label: still a valid IDX file, silently wrong data
    labels.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(UserError) as info:
        load_dataset("mnist", str(tmp_path), download=False)
    message = str(info.value)
    assert str(labels) in message and "delete it" in message and "\n" not in message
    assert MNIST.files["test_labels"].sha256 in message
    assert datasets_module.sha256_of(bytes(content)) in message


def test_another_datasets_file_in_a_flat_folder_is_recognised(tmp_path):
    _place_mnist(tmp_path)
    shutil.copyfile(shared("fashion-mnist") / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(UserError, match="fashion-mnist's t10k-labels-idx1-ubyte") as info:
        load_dataset("mnist", str(tmp_path), download=False)
    assert "own subfolder" in str(info.value)


def test_a_file_is_hashed_once_per_version(tmp_path, monkeypatch):
    hashed = []
    monkeypatch.setattr(datasets_module, "sha256_of", lambda data: hashed.append(1) or download_module.sha256_of(data))
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    shutil.copyfile(shared("mnist") / path.name, path)
    file = MNIST.files["test_labels"]

    def load() -> int:
        hashed.clear()
        assert len(datasets_module._verified_content(path, file, "mnist")) == file.size
        return len(hashed)

    assert load() == 1
    assert load() == 0, "same process: remembered"
    assert (tmp_path / f".{path.name}.sha256").is_file()
    datasets_module._verified_flag.cache_clear()
    assert load() == 0, "new process: the stamp file beside the data remembers"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1))  # new version, same content
    assert load() == 1
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"abc"))
    with pytest.raises(UserError, match="sha256"):
        load()
    # a stale or copied stamp that claims this version is verified cannot pass a file of the wrong size
    identity = datasets_module._identity(path)
    (tmp_path / f".{path.name}.sha256").write_text(datasets_module._stamp_text(identity, file.sha256))
    with pytest.raises(UserError, match="sha256"):
        load()


def test_an_in_place_edit_with_its_mtime_set_back_is_hashed_again(tmp_path, monkeypatch):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(gzip.decompress((shared("mnist") / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    file = MNIST.files["test_labels"]
    datasets_module._verified_content(path, file, "mnist")  # verified: the stamp remembers this version
    before = path.stat()
    content = bytearray(path.read_bytes())
    content[-1] ^= 1  # same size, one label changed ...
    time.sleep(0.01)
    path.write_bytes(bytes(content))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # ... and the modification time put back
    datasets_module._verified_flag.cache_clear()
    with pytest.raises(UserError, match="sha256"):
        datasets_module._verified_content(path, file, "mnist")


def test_a_read_only_folder_still_verifies_once_per_process(tmp_path, monkeypatch):
    hashed = []
    monkeypatch.setattr(datasets_module, "sha256_of", lambda data: hashed.append(1) or download_module.sha256_of(data))
    # What fileio's writers raise on a read-only folder: a WriteError (a PermissionError never leaves them).
    refused = WriteError("stamp", PermissionError(13, "Permission denied"))
    monkeypatch.setattr(datasets_module, "atomic_write_text", lambda *a: (_ for _ in ()).throw(refused))
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    shutil.copyfile(shared("mnist") / path.name, path)
    for _ in range(3):
        datasets_module._verified_content(path, MNIST.files["train_labels"], "mnist")
    assert len(hashed) == 1 and not list(tmp_path.glob(".*"))


# --- missing files and downloads ----------------------------------------------------------------


def _forbid_network(monkeypatch) -> list[str]:
    calls: list[str] = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    return calls


def test_missing_files_offline_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    calls = _forbid_network(monkeypatch)
    with pytest.raises(UserError) as info:
        load_dataset("mnist", str(tmp_path), download=True)
    message = str(info.value)
    assert "\n" not in message
    for file in MNIST.files.values():
        assert file.filename in message
    assert str(tmp_path / "mnist") in message and MNIST.mirrors[0] in message
    # every mirror was tried, each with retries, and the smallest file first
    assert len(calls) == len(MNIST.mirrors) * (len(download_module.RETRY_DELAYS_S) + 1)
    assert all(url.endswith("t10k-labels-idx1-ubyte.gz") for url in calls)
    assert "downloading" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [], "no partial download and no empty folder left behind"


def test_missing_files_without_download_say_where_to_put_them_and_never_download(tmp_path, monkeypatch):
    calls = _forbid_network(monkeypatch)
    _place_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="missing t10k-labels-idx1-ubyte") as info:
        load_dataset("mnist", str(tmp_path), download=False)
    message = str(info.value)
    assert str(tmp_path) in message and MNIST.mirrors[0] in message and "train-labels" not in message
    assert calls == []


class _Mirrors(http.server.BaseHTTPRequestHandler):
    """Routes: /good/ the real files, /wrong/ Fashion-MNIST's, /broken/ cut gzip, /flaky/ 503 once, else 404."""

    requests: list[str]
    flaky_seen: set[str]

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.requests.append(self.path)
        route, _, name = self.path.strip("/").partition("/")
        source = {"good": "mnist", "flaky": "mnist", "wrong": "fashion-mnist", "broken": "mnist"}.get(route)
        if source is None or not (shared(source) / name).is_file():
            return self.send_error(404)
        if route == "flaky" and name not in self.flaky_seen:
            self.flaky_seen.add(name)
            return self.send_error(503)
        body = (shared(source) / name).read_bytes()
        if route == "broken":
            body = body[: len(body) // 2]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror_server():
    handler = type("Handler", (_Mirrors,), {"requests": [], "flaky_seen": set()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()


def _only_labels_missing(root: Path) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for name in IMAGE_FILES:
        (folder / name).symlink_to(shared("mnist") / name)
    return folder


def test_download_skips_bad_mirrors_verifies_and_writes_atomically(tmp_path, mirror_server, capsys):
    base, requests = mirror_server
    folder = _only_labels_missing(tmp_path)
    spec = dataclasses.replace(MNIST, mirrors=tuple(f"{base}/{route}/" for route in ("gone", "wrong", "broken", "good")))
    data = load_registered(spec, str(tmp_path), download=True)
    assert torch.equal(data.train_labels, mnist().train_labels) and torch.equal(data.test_labels, mnist().test_labels)
    for name in LABEL_FILES:
        assert (folder / name).read_bytes() == (shared("mnist") / name).read_bytes()
        assert (folder / f".{name}.sha256").is_file(), "verified on download, so loading does not hash it again"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    # 404 and wrong content are not retried on the same mirror
    assert [r.split("/")[1] for r in requests] == ["gone", "wrong", "broken", "good"] * 2
    assert "100% of" in capsys.readouterr().err


def test_download_retries_a_transient_server_error(tmp_path, mirror_server):
    base, requests = mirror_server
    _only_labels_missing(tmp_path)
    spec = dataclasses.replace(MNIST, mirrors=(f"{base}/flaky/",))
    data = load_registered(spec, str(tmp_path), download=True, progress=lambda message: None)
    assert len(data.test_labels) == 10000 and len(requests) == 4  # each label file: 503, then 200


def test_a_download_with_the_wrong_content_is_not_kept(tmp_path, mirror_server):
    base, _ = mirror_server
    folder = _only_labels_missing(tmp_path)
    spec = dataclasses.replace(MNIST, mirrors=(f"{base}/wrong/", f"{base}/broken/"))
    with pytest.raises(UserError, match="could not download") as info:
        load_registered(spec, str(tmp_path), download=True, progress=lambda message: None)
    assert "sha256" in str(info.value) and "gzip" in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == sorted(IMAGE_FILES), "nothing but the files that were there"


# --- stratified subsets -------------------------------------------------------------------------


def test_stratified_subset_keeps_class_shares_exactly_and_reproducibly():
    labels = mnist().train_labels
    subset = stratified_subset(labels, 5000, seed=3)
    assert subset.dtype == torch.int64 and len(subset) == 5000 and len(torch.unique(subset)) == 5000
    assert torch.equal(subset, torch.sort(subset).values)
    counts = torch.bincount(labels[subset], minlength=10).double()
    ideal = torch.tensor(MNIST_TRAIN_COUNTS, dtype=torch.float64) * 5000 / 60000
    assert (counts - ideal).abs().max() < 1
    assert torch.equal(subset, stratified_subset(labels, 5000, seed=3))
    assert not torch.equal(subset, stratified_subset(labels, 5000, seed=4))
    assert torch.equal(stratified_subset(labels, 60000, seed=0), torch.arange(60000))


@pytest.mark.parametrize(
    "counts,n,expected",
    [
        ([5, 3, 2], 5, [3, 1, 1]), ([97, 2, 1], 10, [10, 0, 0]), ([1, 1, 1, 1], 3, [1, 1, 1, 0]), ([2, 5, 3], 5, [1, 3, 1]),
        ([1, 7, 2], 4, [0, 3, 1]),
    ],
)
def test_stratified_subset_rounds_by_largest_remainder(counts, n, expected):
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    subset = stratified_subset(labels, n, seed=1)
    assert torch.bincount(labels[subset], minlength=len(counts)).tolist() == expected


@pytest.mark.parametrize("n", [0, -1, 60001])
def test_stratified_subset_rejects_impossible_sizes(n):
    with pytest.raises(UserError, match=f"--num_images must be between 1 and 60000, got {n}"):
        stratified_subset(mnist().train_labels, n, seed=0)



# --- the dataset registry: one list that config validation, CLI help and the loader read ---------


def test_the_registry_is_the_one_list_config_help_and_loader_read(tmp_path):
    from tripletnet.cli import _build_parser
    from tripletnet.config import TrainConfig

    assert DATASETS.names() == tuple(DATASET_SPECS) == ("mnist", "fashion-mnist")
    assert DATASETS.describe() == "mnist, fashion-mnist, a folder of class subfolders, or a .csv file of image paths and labels"
    dataset_help = next(f.metadata["help"] for f in fields(TrainConfig) if f.name == "dataset")
    assert dataset_help == f"dataset: {DATASETS.describe()}"
    train_help = " ".join(_build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert DATASETS.describe() in train_help
    for name in DATASETS.names():
        TrainConfig(dataset=name).validate()
    TrainConfig(dataset=str(tmp_path)).validate()  # a folder
    with pytest.raises(ParameterError) as info:
        TrainConfig(dataset="cifar-10").validate()
    assert info.value.parameter == "dataset" and DATASETS.describe() in info.value.problem


def _save_splits_npz(path: Path, n_per_class: int = 3) -> None:
    labels = np.repeat(np.arange(2), n_per_class)
    images = np.arange(len(labels) * 28 * 28, dtype=np.uint8).reshape(-1, 28, 28)
    with open(path, "wb") as fh:  # a handle: np.savez would append ".npz" to "Tiny.NPZ"
        np.savez(fh, train_images=images, train_labels=labels, test_images=images[:2], test_labels=labels[:2])


def _load_splits_npz(path: Path, _options: object) -> DatasetSplits:  # a format of fixed size: no image options
    with np.load(path, allow_pickle=False) as arrays:
        tensors = {key: torch.from_numpy(arrays[key]) for key in arrays.files}
    return DatasetSplits(class_names=("a", "b"), name=path.stem, **tensors)


# The worked example for CONTRIBUTING: a new kind of dataset given by its path is one PathKind.
NPZ_SPLITS = PathKind("npz", "an .npz of train/test images and labels", has_suffix(".npz"), _load_splits_npz)


def test_a_new_kind_of_dataset_is_one_registration_dispatched_by_suffix(tmp_path):
    registry = dataclasses.replace(DATASETS, path_kinds=(*DATASETS.path_kinds, NPZ_SPLITS))
    assert registry.describe() == (
        "mnist, fashion-mnist, a folder of class subfolders, a .csv file of image paths and labels, "
        "or an .npz of train/test images and labels"
    )
    path = tmp_path / "Tiny.NPZ"  # the suffix matches in any case
    _save_splits_npz(path)
    data = registry.load(str(path))
    assert data.name == "Tiny" and data.train_images.shape == (6, 28, 28) and data.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    registry.check(str(tmp_path / "not-yet-written.npz"))  # a kind matched by suffix: its loader reports a missing file
    with pytest.raises(ParameterError, match="an .npz of train/test images"):
        registry.check(str(tmp_path / "data.h5"))
    with pytest.raises(ParameterError):  # the shared registry is unchanged
        DATASETS.check(str(path))


def test_a_registered_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    monkeypatch.chdir(tmp_path)
    assert DATASETS.loader("mnist") is DATASETS.named["mnist"]
    assert DATASETS.loader("./mnist") is not DATASETS.named["mnist"]


def test_the_csv_kind_hands_the_path_to_the_csv_reader(tmp_path):
    # The registry imports the CSV reader at its top (no import cycle to dodge): the registered kind loads with it.
    assert CSV_FILE in DATASETS.path_kinds and CSV_FILE.load is load_csv_dataset
    calls = []
    spy = dataclasses.replace(CSV_FILE, load=lambda path, options: calls.append((path, options)) or "splits")
    registry = dataclasses.replace(DATASETS, path_kinds=tuple(spy if kind is CSV_FILE else kind for kind in DATASETS.path_kinds))
    options = ImageOptions(image_size=32, channels=3)
    assert registry.load(str(tmp_path / "labels.csv"), options=options) == "splits"
    assert calls == [(tmp_path / "labels.csv", options)]  # the image options reach the reader
    assert registry.describe().endswith("or a .csv file of image paths and labels")


def _tiny_idx_spec(folder: Path) -> DatasetSpec:
    """A two-class IDX dataset written to ``folder/tiny/``, with the spec that registers it."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (8, 28, 28)), "train_labels": np.array([0, 1] * 4),
        "test_images": rng.integers(0, 256, (4, 28, 28)), "test_labels": np.array([0, 1] * 2),
    }
    (folder / "tiny").mkdir(parents=True)
    files = {}
    for role, array in arrays.items():
        content = _idx_bytes(array)
        name = f"tiny-{role.replace('_', '-')}-ubyte"
        (folder / "tiny" / name).write_bytes(content)
        files[role] = datasets_module.IdxFile(name, hashlib.sha256(content).hexdigest(), len(content))
    return DatasetSpec(name="tiny", folders=("tiny",), files=files, mirrors=("https://example.invalid/",), class_names=("a", "b"))


def test_a_new_idx_dataset_is_one_spec_in_the_registry(tmp_path):
    spec = _tiny_idx_spec(tmp_path)
    registry = dataclasses.replace(DATASETS, named={**DATASETS.named, "tiny": functools.partial(load_registered, spec)})
    assert "tiny" in registry.names() and registry.describe().startswith("mnist, fashion-mnist, tiny, a folder")
    data = registry.load("tiny", str(tmp_path), download=False)
    assert data.name == "tiny" and data.train_images.shape == (8, 28, 28) and data.test_labels.tolist() == [0, 1, 0, 1]

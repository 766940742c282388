"""Image folders over the --cache_images budget: decoded per batch by DataLoader workers, with the same batches."""

import multiprocessing
from pathlib import Path

import pytest
import torch

from synthetic_images import make_synthetic_dataset
from tripletnet.config import TrainConfig
from tripletnet.data import load_dataset
from tripletnet.data.folder import ImageOptions, ImageSplits, fits_in_cache, load_image_folder
from tripletnet.data.loading import InMemoryBatches, StreamedBatches
from tripletnet.errors import ParameterError, UserError
from tripletnet.sampler import ClassBalancedBatchSampler
from tripletnet.training import train
from tripletnet.training.checkpoint import load_checkpoint

from _mnist import assert_same_state, mnist_slice

CPU = torch.device("cpu")


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Ten colour identities of 64x64 PNGs, eight images each: six identities train, four (unseen) test."""
    root = tmp_path_factory.mktemp("colour")
    make_synthetic_dataset(root, n_train=6, n_test=4, images_per_identity=8)
    return root


def _load(root: Path, cache_images: int | None, **options) -> ImageSplits:
    return load_image_folder(root, ImageOptions(image_size=48, cache_images=cache_images, **options), log=_quiet)


def _sampler(data: ImageSplits) -> ClassBalancedBatchSampler:
    return ClassBalancedBatchSampler(data.train_labels, batch_size=12, num_batches=3, seed=5)


def _streamed(data: ImageSplits, num_workers: int, **options) -> StreamedBatches:
    assert data.train_files is not None
    return StreamedBatches(data.train_files, data.train_labels, _sampler(data), CPU, num_workers, **options)


def _epochs(source, epochs=(1, 2)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch for epoch in epochs for batch in source.epoch(epoch)]


def test_the_budget_counts_decoded_bytes_of_both_splits():
    assert fits_in_cache(256, 3, 64, 3) and not fits_in_cache(257, 3, 64, 3)  # 256 x 12 KiB = 3 MiB
    assert fits_in_cache(10**9, 3, 64, None) and not fits_in_cache(1, 1, 1, 0)
    with pytest.raises(ParameterError, match="cache_images"):
        ImageOptions(cache_images=-1)
    with pytest.raises(ParameterError, match="cache_images"):
        TrainConfig(cache_images=-1).validate()
    # evaluate and embed reload a run's data with its image options: always into memory, never streamed
    assert TrainConfig(cache_images=0).image_options().cache_images is None


def test_over_the_budget_the_same_dataset_is_listed_not_decoded(folder):
    held, streamed = _load(folder, None), _load(folder, 0)
    assert not held.streamed and streamed.streamed
    assert len(streamed.train_images) == 0 and len(streamed.train_files) == len(held.train_labels)  # type: ignore[arg-type]
    for name in ("train_labels", "test_labels"):
        assert torch.equal(getattr(held, name), getattr(streamed, name))
    for name in ("train_paths", "test_paths", "class_names"):
        assert getattr(held, name) == getattr(streamed, name)
    assert (held.mean, held.std) == (streamed.mean, streamed.std), "mean/std from the same pixels, summed in the same order"
    assert torch.equal(streamed.test_files.load(), held.test_images)  # type: ignore[union-attr]
    # exactly at the budget it is still held; one image over, streamed
    needed_mib = (len(held.train_labels) + len(held.test_labels)) * 3 * 48 * 48 / 2**20
    assert not _load(folder, int(needed_mib) + 1).streamed and _load(folder, int(needed_mib)).streamed


def test_streamed_batches_hold_the_in_memory_batches_indices_labels_and_pixels(folder):
    held, streamed = _load(folder, None), _load(folder, 0)
    sampler = _sampler(held)
    expected = [(held.train_images[i], held.train_labels[i]) for epoch in (1, 2) for i in sampler.batches(epoch)]
    from_memory = _epochs(InMemoryBatches(held.train_images, held.train_labels, sampler, CPU))
    from_disk = _epochs(_streamed(streamed, num_workers=0))
    assert len(from_disk) == len(expected) == 6
    for (images, labels), (memory_images, memory_labels), (disk_images, disk_labels) in zip(
        expected, from_memory, from_disk, strict=True
    ):
        assert torch.equal(memory_labels, labels) and torch.equal(disk_labels, labels)
        assert disk_images.dtype == torch.uint8 and disk_images.shape == (12, 3, 48, 48)
        assert torch.equal(memory_images, images)
        torch.testing.assert_close(disk_images, images, rtol=0, atol=0)  # decoding is deterministic: exactly the same


def test_zero_and_two_workers_give_identical_batches_and_leave_no_process_behind(folder):
    streamed = _load(folder, 0)
    main = _epochs(_streamed(streamed, num_workers=0))
    workers = _epochs(_streamed(streamed, num_workers=2))
    for (a_images, a_labels), (b_images, b_labels) in zip(main, workers, strict=True):
        assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    assert multiprocessing.active_children() == [], "the workers end with their epoch"
    epoch = _streamed(streamed, num_workers=2).epoch(1)
    next(epoch)
    epoch.close()  # a loop that leaves an epoch early (an undone epoch, an error)
    assert multiprocessing.active_children() == []


def test_an_image_that_became_unreadable_stops_training_in_one_line_or_is_skipped(tmp_path):
    make_synthetic_dataset(tmp_path, n_train=6, n_test=4, images_per_identity=8)
    streamed = _load(tmp_path, 0)
    assert streamed.train_files is not None
    sampler = _sampler(streamed)
    first_batch = sampler.batches(1)[0]
    broken = streamed.train_files.paths[int(first_batch[0])]
    broken.write_bytes(broken.read_bytes()[:80])  # truncated after loading, as a disk or a sync tool might
    with pytest.raises(UserError) as stopped:
        _epochs(_streamed(streamed, num_workers=2), epochs=(1,))
    message = str(stopped.value)
    assert "\n" not in message and str(broken) in message and "--skip_bad_images" in message
    assert multiprocessing.active_children() == []
    lines: list[str] = []
    batches = _epochs(_streamed(streamed, num_workers=2, skip_bad_images=True, log=lines.append), epochs=(1,))
    images, labels = batches[0]
    assert len(images) == len(labels) == 11
    assert torch.equal(labels, streamed.train_labels[first_batch[1:]])
    assert len(lines) == 1 and lines[0].startswith("epoch 1: skipped 1 images") and str(broken) in lines[0]


def test_a_bad_image_found_while_loading_is_reported_as_when_held_in_memory(tmp_path):
    make_synthetic_dataset(tmp_path, n_train=6, n_test=4, images_per_identity=8)
    bad = tmp_path / "train" / "ident_002" / "ident_002_0003.png"
    bad.write_bytes(b"not an image")
    errors = []
    for cache in (None, 0):
        with pytest.raises(UserError) as refused:
            _load(tmp_path, cache)
        errors.append(str(refused.value))
    assert errors[0] == errors[1] and str(bad) in errors[0]
    held, streamed = _load(tmp_path, None, skip_bad_images=True), _load(tmp_path, 0, skip_bad_images=True)
    assert held.skipped == streamed.skipped and len(held.skipped) == 1
    assert held.train_paths == streamed.train_paths and "train/ident_002/ident_002_0003.png" not in streamed.train_paths


def _folder_config(tmp_path: Path, root: Path, name: str, **overrides) -> TrainConfig:
    values = {"dataset": str(root), "image_size": 32, "num_images": 36, "batch_size": 12, "epochs": 2, "eval_every": 1,
              "eval_images": 0, "num_val_triplets": 16, "checkpoint_path": str(tmp_path / name), "precision": "fp32"}
    values.update(overrides)
    return TrainConfig(**values)


def test_a_streamed_run_with_two_workers_trains_as_the_in_memory_run_and_resumes(folder, tmp_path):
    held = train(_folder_config(tmp_path, folder, "held"), log=_quiet)
    lines: list[str] = []
    streamed = train(_folder_config(tmp_path, folder, "streamed", cache_images=0, num_workers=2), log=lines.append)
    assert any("decoded from disk for every batch by 2 worker processes" in line for line in lines)
    keys = ("train_loss", "val_loss", "active_fraction", "precision_at_1", "embedding_spread")
    assert [[r[k] for k in keys] for r in streamed.history] == [[r[k] for k in keys] for r in held.history]
    assert_same_state(held.model.state_dict(), streamed.model.state_dict())
    assert multiprocessing.active_children() == []

    resumed = train(_folder_config(tmp_path, folder, "resumed", cache_images=0, num_workers=2),
                    resume=tmp_path / "streamed" / "epoch_1.pt", log=_quiet)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in streamed.history]
    assert_same_state(streamed.model.state_dict(), resumed.model.state_dict())
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2


def test_mnist_stays_in_memory_whatever_the_budget(tmp_path):
    data = mnist_slice(n_train=512, n_test=200)
    common = {"num_images": 256, "batch_size": 64, "epochs": 1, "eval_every": 0, "num_val_triplets": 32, "precision": "fp32"}
    default = train(TrainConfig(checkpoint_path=str(tmp_path / "a"), **common), data=data, log=_quiet)
    zero = train(TrainConfig(checkpoint_path=str(tmp_path / "b"), cache_images=0, num_workers=2, **common), data=data, log=_quiet)
    assert default.history[0]["train_loss"] == zero.history[0]["train_loss"]
    assert_same_state(default.model.state_dict(), zero.model.state_dict())
    assert not isinstance(load_dataset("mnist", download=False), ImageSplits)

"""Image folders: layouts, open and closed sets, splits, colour and size, and every bad input."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthetic_images import (
    identity_name,
    make_synthetic_dataset,
    write_identity_images,
)
from tripletnet.data.folder import (
    ImageOptions,
    ImageSplits,
    load_image_folder,
    read_image,
)
from tripletnet.data.transforms import channel_mean_std
from tripletnet.errors import ParameterError, UserError


def _quiet(_: str) -> None:
    pass


def _write(folder: Path, count: int, value: int = 0, size=(40, 30), mode: str = "RGB", suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((size[1], size[0], 3), value + i, dtype=np.uint8)).convert(mode).save(folder / f"{i}{suffix}")


def _names(data: ImageSplits, labels: torch.Tensor) -> set[str]:
    return {data.class_names[i] for i in labels.tolist()}


def test_split_folders_with_disjoint_identities_give_an_open_set_in_colour(tmp_path):
    made = make_synthetic_dataset(tmp_path, n_train=4, n_test=3, images_per_identity=3)
    data = load_image_folder(tmp_path, log=_quiet)
    assert data.train_images.shape == (12, 3, 64, 64) and data.test_images.shape == (9, 3, 64, 64)
    assert data.train_images.dtype == torch.uint8 and data.test_labels.dtype == torch.int64
    assert data.channels == 3 and data.image_size == 64 and data.split == "given"
    assert data.train_class_names == made.train_identities and data.n_train_classes == 4
    assert set(data.test_class_names) == set(made.test_identities) and data.unseen_test_classes == 3
    assert data.train_labels.max() < 4 <= data.test_labels.min(), "labels of unseen identities follow the training ones"
    # every image can be found again by its path
    assert data.test_paths[0] == f"test/{made.test_identities[0]}/{made.test_identities[0]}_0001.png"
    for images, paths in ((data.train_images, data.train_paths), (data.test_images, data.test_paths)):
        for index in (0, len(paths) - 1):
            assert np.array_equal(images[index].numpy(), read_image(tmp_path / paths[index], 64, 3))
    assert (data.mean, data.std) == channel_mean_std(data.train_images)


def test_split_folders_sharing_identities_are_a_closed_set(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        for index in range(3):
            write_identity_images(tmp_path / split, index, count, rng)
    data = load_image_folder(tmp_path, log=_quiet)
    assert data.unseen_test_classes == 0 and data.class_names == tuple(identity_name(i) for i in range(3))
    assert torch.bincount(data.test_labels).tolist() == [2, 2, 2]


def test_a_flat_folder_splits_by_identity_by_default_and_always_the_same_way(tmp_path):
    make_synthetic_dataset(tmp_path, n_train=10, n_test=0, images_per_identity=2, split_folders=False)
    data = load_image_folder(tmp_path, ImageOptions(image_size=32), log=_quiet)
    assert data.split == "identity" and data.train_images.shape[2:] == (32, 32)
    train, test = _names(data, data.train_labels), _names(data, data.test_labels)
    assert not train & test and len(train | test) == 10 and len(test) == 2  # 20% of 10 identities
    again = load_image_folder(tmp_path, ImageOptions(image_size=32), log=_quiet)
    assert again.test_paths == data.test_paths
    other = {load_image_folder(tmp_path, ImageOptions(image_size=32, seed=seed), log=_quiet).test_paths for seed in range(1, 5)}
    assert len(other | {data.test_paths}) > 1, "the seed chooses the test identities"
    half = load_image_folder(tmp_path, ImageOptions(image_size=32, test_fraction=0.5), log=_quiet)
    assert len(_names(half, half.test_labels)) == 5


def test_a_flat_folder_split_by_image_is_stratified(tmp_path):
    _write(tmp_path / "cats", 10, 10)
    _write(tmp_path / "dogs", 5, 200, suffix=".bmp", mode="L")
    _write(tmp_path / "owl", 1, 90)
    (tmp_path / "dogs" / "notes.txt").write_text("not an image: ignored")
    data = load_image_folder(tmp_path, ImageOptions(split_by="image", image_size=28), log=_quiet)
    assert data.split == "image" and data.class_names == ("cats", "dogs", "owl")
    assert torch.bincount(data.test_labels, minlength=3).tolist() == [2, 1, 0], "20% of each, none of a single image"
    assert torch.bincount(data.train_labels).tolist() == [8, 4, 1]
    assert data.train_images.shape == (13, 3, 28, 28)
    assert (
        int(data.train_images[data.train_labels == 1].min()) >= 200 and int(data.train_images[data.train_labels == 0].max()) < 30
    )


def test_identities_with_one_image_are_kept_and_counted(tmp_path):
    _write(tmp_path / "train" / "a", 3)
    _write(tmp_path / "train" / "b", 3)
    _write(tmp_path / "train" / "solo1", 1)
    _write(tmp_path / "train" / "solo2", 1)
    _write(tmp_path / "test" / "c", 2)
    lines: list[str] = []
    data = load_image_folder(tmp_path, log=lines.append)
    assert data.n_train_classes == 4 and len(data.train_labels) == 8
    assert sum("2 training identities have a single image" in line and "negatives" in line for line in lines) == 1


def test_fewer_than_two_usable_training_identities_is_refused(tmp_path):
    _write(tmp_path / "train" / "a", 3)
    _write(tmp_path / "train" / "b", 1)
    _write(tmp_path / "test" / "c", 2)
    with pytest.raises(UserError, match="at least two training identities with two or more images each, found 1"):
        load_image_folder(tmp_path, log=_quiet)


def test_too_few_identities_to_split_by_identity_is_refused(tmp_path):
    for name in "abc":
        _write(tmp_path / name, 3)
    with pytest.raises(UserError, match="too few to split by identity"):
        load_image_folder(tmp_path, log=_quiet)
    assert load_image_folder(tmp_path, ImageOptions(split_by="image"), log=_quiet).split == "image"


def test_mixed_grey_and_colour_become_rgb_and_it_is_said_once(tmp_path):
    _write(tmp_path / "a", 3, mode="L")
    _write(tmp_path / "b", 3, mode="RGB")
    _write(tmp_path / "c", 2, mode="L")
    _write(tmp_path / "d", 2, mode="L")
    lines: list[str] = []
    data = load_image_folder(tmp_path, ImageOptions(split_by="image"), log=lines.append)
    assert data.channels == 3 and len(data.mean) == 3
    assert [line for line in lines if "converted" in line] == [
        f"{tmp_path.name}: 7 of 10 images are grey, converted to RGB (grey replicated) (the data mixes grey and colour)"
    ]
    forced = load_image_folder(tmp_path, ImageOptions(split_by="image", channels=1), log=_quiet)
    assert forced.train_images.shape[1] == 1 and forced.channels == 1


def test_grey_data_stays_one_channel_and_small_images_default_to_28(tmp_path):
    for name in "abcd":
        _write(tmp_path / name, 3, size=(20, 16), mode="L")
    lines: list[str] = []
    data = load_image_folder(tmp_path, ImageOptions(split_by="image"), log=lines.append)
    assert data.channels == 1 and data.image_size == 28 and data.train_images.shape[1:] == (1, 28, 28)
    # the upscaling is said (1x1 images once trained at 28x28 without a word); an asked size is not
    assert [line for line in lines if "upscaled" in line] == [
        f"{tmp_path.name}: its training images are 16 px on the short side (median), upscaled to the smallest default "
        "size, 28x28; --image_size sets another"]
    lines.clear()
    load_image_folder(tmp_path, ImageOptions(split_by="image", image_size=28), log=lines.append)
    assert not [line for line in lines if "upscaled" in line]
    big = tmp_path / "big"
    for name in "abcd":
        _write(big / name, 3, size=(300, 200))
    lines.clear()
    assert load_image_folder(big, ImageOptions(split_by="image"), log=lines.append).image_size == 64
    assert not [line for line in lines if "upscaled" in line]


def test_an_unreadable_image_is_named_or_skipped_and_counted(tmp_path):
    make_synthetic_dataset(tmp_path, n_train=3, n_test=2, images_per_identity=3)
    broken = tmp_path / "train" / identity_name(0) / "broken.png"
    broken.write_bytes(b"not an image at all")
    good = tmp_path / "train" / identity_name(1) / f"{identity_name(1)}_0001.png"
    truncated = tmp_path / "train" / identity_name(1) / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(UserError, match="broken.png"):
        load_image_folder(tmp_path, log=_quiet)
    broken.unlink()
    with pytest.raises(UserError, match="truncated.png"):
        load_image_folder(tmp_path, log=_quiet)
    broken.write_bytes(b"not an image at all")
    lines: list[str] = []
    data = load_image_folder(tmp_path, ImageOptions(skip_bad_images=True), log=lines.append)
    assert len(data.skipped) == 2 and len(data.train_labels) == 9
    assert not any("broken" in p or "truncated" in p for p in data.train_paths)
    assert sum("skipped 2 unreadable images" in line for line in lines) == 1


@pytest.mark.parametrize("pixels", [48 * 48, 80 * 80], ids=["over the warning limit", "over the error limit"])
def test_a_decompression_bomb_is_reported_as_such(tmp_path, monkeypatch, pixels):
    side = int(pixels ** 0.5)
    for name in "ab":
        _write(tmp_path / "train" / name, 2)
    _write(tmp_path / "test" / "c", 2)
    Image.new("RGB", (side, side)).save(tmp_path / "train" / "a" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 40x30 images pass, 48x48 warns, 80x80 errors in Pillow
    with pytest.raises(UserError, match=r"bomb\.png: refused as a possible decompression bomb") as caught:
        load_image_folder(tmp_path, log=_quiet)
    # One limit, the one to raise (Pillow's own message names its error limit, twice it, as well).
    assert str(caught.value).endswith(f"({pixels:,} pixels, over Pillow's limit PIL.Image.MAX_IMAGE_PIXELS = 2,000 pixels)")
    assert "4000" not in str(caught.value) and "4,000" not in str(caught.value)
    data = load_image_folder(tmp_path, ImageOptions(skip_bad_images=True), log=_quiet)
    assert len(data.skipped) == 1 and "decompression bomb" in data.skipped[0]


def test_folder_mistakes_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_image_folder(tmp_path / "nowhere", log=_quiet)
    with pytest.raises(UserError, match="holds no images"):
        load_image_folder(tmp_path, log=_quiet)
    flat = tmp_path / "flat"
    _write(flat, 3)  # images straight in the folder: they are there, the identities are not
    with pytest.raises(UserError, match="holds 3 images but no identity subfolders: expected one subfolder per identity"):
        load_image_folder(flat, log=_quiet)
    shutil.rmtree(flat)
    _write(tmp_path / "train" / "a", 2)
    _write(tmp_path / "train" / "b", 2)
    with pytest.raises(UserError, match="no test/"):
        load_image_folder(tmp_path, log=_quiet)
    (tmp_path / "test" / "c").mkdir(parents=True)
    (tmp_path / "train" / "e").mkdir()
    with pytest.raises(UserError, match="identity folder .*e holds no images"):
        load_image_folder(tmp_path, log=_quiet)
    shutil.rmtree(tmp_path / "train" / "e")
    with pytest.raises(UserError, match="test holds no images"):
        load_image_folder(tmp_path, log=_quiet)


def test_bad_options_name_their_parameter(tmp_path):
    for name in "abcd":
        _write(tmp_path / name, 2)
    for options, parameter in (({"split_by": "random"}, "split_by"), ({"test_fraction": 1.0}, "test_fraction"),
                               ({"channels": 4}, "channels"), ({"image_size": 0}, "image_size")):
        with pytest.raises(ParameterError, match=parameter):
            load_image_folder(tmp_path, ImageOptions(**options), log=_quiet)


def test_a_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
    pixels = np.zeros((10, 20), dtype=np.uint8)
    pixels[:, 10:] = 255  # stored: left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "camera.png", exif=exif)
    Image.fromarray(pixels).rotate(-90, expand=True).save(tmp_path / "upright.png")  # what the viewer shows
    shown = read_image(tmp_path / "camera.png", 10, 1)
    assert np.array_equal(shown, read_image(tmp_path / "upright.png", 10, 1))
    assert shown[0, 0].max() == 0 and shown[0, -1].min() == 255  # top black, bottom white after the turn


def test_a_pipe_given_as_an_image_is_refused_at_once(tmp_path):
    import os
    import threading

    from tripletnet.data.images import probe_image, read_image

    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)

    def unblock_a_reader() -> None:  # without the check, opening the pipe would wait for a writer for ever
        descriptor = os.open(fifo, os.O_WRONLY)
        os.close(descriptor)

    unblocker = threading.Timer(20, unblock_a_reader)
    unblocker.daemon = True
    unblocker.start()
    try:
        for read in (lambda: read_image(fifo, 28, 1), lambda: probe_image(fifo)):
            with pytest.raises(UserError, match=r"image\.png: it is not a regular file \(a pipe, socket or device\)"):
                read()
    finally:
        unblocker.cancel()


def test_one_file_under_two_identities_or_in_both_splits_is_said(tmp_path):
    """A symlinked identity folder, or a CSV row repeated into the other split, was trained on without a word."""
    from tripletnet.data.csv import load_csv_dataset

    for name in "abcd":
        _write(tmp_path / "faces" / name, 3)
    (tmp_path / "faces" / "alias").symlink_to(tmp_path / "faces" / "b", target_is_directory=True)
    lines: list[str] = []
    load_image_folder(tmp_path / "faces", ImageOptions(split_by="image"), log=lines.append)
    assert sum("3 images are listed under two identities" in line and "'alias' and 'b'" in line for line in lines) == 1, lines

    files = sorted((tmp_path / "faces").glob("[abcd]/*.png"))
    rows = [f"{f.as_posix()},{f.parent.name},train" for f in files] + [f"{files[0].as_posix()},a,test",
                                                                        f"{files[3].as_posix()},b,test"]
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,split\n" + "\n".join(rows) + "\n", encoding="utf-8")
    lines.clear()
    load_csv_dataset(listing, log=lines.append)
    assert sum("2 images are in both the training and the test split" in line for line in lines) == 1, lines
    assert not any("two identities" in line for line in lines)


def test_images_below_the_identity_folders_are_said_to_be_left_out(tmp_path):
    for name in "abc":
        _write(tmp_path / name, 3)
    _write(tmp_path / "a" / "deeper", 2)
    lines: list[str] = []
    data = load_image_folder(tmp_path, ImageOptions(split_by="image"), log=lines.append)
    assert len(data.train_labels) + len(data.test_labels) == 9
    assert sum("2 images in folders below the identity folders are not read (e.g. a/deeper/" in line for line in lines) == 1
    shutil.rmtree(tmp_path / "a" / "deeper")
    lines.clear()
    load_image_folder(tmp_path, ImageOptions(split_by="image"), log=lines.append)
    assert not any("below the identity folders" in line for line in lines)


def test_symbolic_links_that_point_to_nothing_are_said_to_be_left_out(tmp_path):
    for name in "abc":
        _write(tmp_path / name, 3)
    (tmp_path / "gone").symlink_to(tmp_path / "moved-away")  # an identity folder whose target moved
    (tmp_path / "a" / "lost.png").symlink_to(tmp_path / "nowhere.png")
    lines: list[str] = []
    data = load_image_folder(tmp_path, ImageOptions(split_by="image"), log=lines.append)
    assert len(data.train_labels) + len(data.test_labels) == 9
    assert sum("2 symbolic links point to nothing and are not read (e.g. gone ->" in line for line in lines) == 1, lines
    (tmp_path / "gone").unlink()
    (tmp_path / "a" / "lost.png").unlink()
    lines.clear()
    load_image_folder(tmp_path, ImageOptions(split_by="image"), log=lines.append)
    assert not any("symbolic link" in line for line in lines)

"""One image pipeline: training's data loading and a loaded model's embed prepare every kind of image alike.

The images are the awkward ones (odd aspect ratios, EXIF-rotated JPEGs, palette, 16-bit grey, RGBA,
LA, float TIFF); the model is a tiny run trained on them at a non-default --image_size 32.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from odd_images import ODD_KINDS, write_odd_folder
from tripletnet.api import load_run_images
from tripletnet.data.folder import load_image_folder
from tripletnet.data.images import read_image
from tripletnet.data.types import ImageOptions
from tripletnet.errors import UserError
from tripletnet.inference import load_model, preprocess_image
from tripletnet.models import embed_images

from _checkpoint import train_tiny_on

SIZE = 32


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """(the image folder, the checkpoint trained on it)."""
    base = tmp_path_factory.mktemp("odd")
    write_odd_folder(base / "images")
    return base / "images", train_tiny_on(base / "images", base / "run", image_size=SIZE)


def _held(root, **options):
    """The training path's tensors of every image (train then test), and their files in that order."""
    data = load_image_folder(root, ImageOptions(image_size=SIZE, **options), log=_quiet)
    files = [data.root / path for path in (*data.train_paths, *data.test_paths)]
    return data, torch.cat([data.train_images, data.test_images]), files


def test_every_kind_is_in_the_training_data(odd_run):
    data, images, files = _held(odd_run[0])
    assert {f.stem for f in files} == set(ODD_KINDS) and data.channels == 3
    assert images.shape == (len(files), 3, SIZE, SIZE) and images.dtype == torch.uint8


def test_embed_prepares_files_and_pil_images_exactly_as_training_loaded_them(odd_run):
    root, checkpoint = odd_run
    _, held, files = _held(root)
    model = load_model(checkpoint, log=_quiet)
    assert model.input_shape == (3, SIZE, SIZE)
    assert torch.equal(model.preprocess(files), held)
    pictures = [Image.open(f) for f in files]
    assert torch.equal(model.preprocess(pictures), held)
    for kind in ODD_KINDS:  # each kind alone, so a mismatch names its kind
        position = next(i for i, f in enumerate(files) if f.stem == kind)
        assert torch.equal(model.preprocess(files[position])[0], held[position]), kind


def test_the_streamed_training_path_decodes_the_same_pixels(odd_run):
    data, held, _ = _held(odd_run[0], cache_images=0)
    assert data.streamed and data.train_files is not None and data.test_files is not None
    assert torch.equal(torch.cat([data.train_files.load(), data.test_files.load()]), _held(odd_run[0])[1])


def test_embeddings_of_files_equal_those_of_the_training_tensors(odd_run):
    root, checkpoint = odd_run
    _, held, files = _held(root)
    model = load_model(checkpoint, log=_quiet)
    from_files = model.embed(files)
    assert torch.equal(from_files, model.embed(held))
    # The training loop's own embedding function (NCHW inputs, where embed feeds NHWC): equal up to kernel rounding.
    torch.testing.assert_close(from_files, embed_images(model.network, held), atol=1e-5, rtol=0)
    # One image alone is another batch shape, which oneDNN may round differently.
    torch.testing.assert_close(model.embed(files[:1]), from_files[:1], atol=1e-5, rtol=0)


def test_the_reloaded_run_data_are_the_training_tensors(odd_run):
    root, checkpoint = odd_run
    data, _, _ = _held(root)
    run = load_run_images(checkpoint, "test", log=_quiet)
    assert torch.equal(run.images, data.test_images) and torch.equal(run.labels, data.test_labels)


def test_a_one_channel_model_sees_the_pixels_of_a_grey_training_set(odd_run):
    _, grey, files = _held(odd_run[0], channels=1)
    assert grey.shape[1] == 1
    prepared = torch.stack([preprocess_image(Image.open(f), (1, SIZE, SIZE)) for f in files])
    assert torch.equal(prepared, grey)


def test_odd_aspect_ratios_are_cropped_not_squashed(odd_run):
    """Against a hand computation: short side to 32 with Pillow's bilinear filter, then the central square."""
    wide = next(odd_run[0].glob("train/*/wide-80x40.png"))
    resized = np.asarray(Image.open(wide).resize((64, 32), Image.Resampling.BILINEAR))  # 80 x 40 -> 64 x 32
    expected = resized[:, 16:48].transpose(2, 0, 1)
    assert np.array_equal(read_image(wide, SIZE, 3), expected)
    squashed = np.asarray(Image.open(wide).resize((SIZE, SIZE), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert np.abs(expected.astype(int) - squashed).mean() > 5, "the test images must tell a crop from a squash"


@pytest.mark.parametrize("orientation, turn", [(6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90)])
def test_exif_orientation_turns_the_stored_pixels_upright(odd_run, tmp_path, orientation, turn):
    jpeg = next(odd_run[0].glob(f"train/*/exif-{orientation}.jpg"))
    with Image.open(jpeg) as stored:
        assert stored.size == (60, 40)
        upright = stored.transpose(turn)  # the rotation orientation 6 (8) asks for, done by hand
    assert upright.size == (40, 60)
    upright.save(tmp_path / "upright.png")
    assert np.array_equal(read_image(jpeg, SIZE, 3), read_image(tmp_path / "upright.png", SIZE, 3))


def test_a_16_bit_image_is_scaled_over_its_range_not_clipped(odd_run):
    grey16 = next(odd_run[0].glob("train/*/grey-16bit.png"))
    pixels = read_image(grey16, SIZE, 1)
    assert pixels.min() == 0 and pixels.max() == 255  # its values lie in 1000..11200: clipping would give all 255


def test_a_nan_float_image_is_refused_naming_the_file_without_a_numpy_warning(odd_run, tmp_path):
    values = np.full((20, 30), 0.5, dtype=np.float32)
    values[3, 4] = np.nan
    path = tmp_path / "nan.tif"
    Image.fromarray(values, mode="F").save(path)
    model = load_model(odd_run[1], log=_quiet)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserError, match=r"nan\.tif.*NaN"):
            read_image(path, SIZE, 1)
        with pytest.raises(UserError, match=r"nan\.tif.*NaN"):
            model.embed([path])

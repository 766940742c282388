"""Image transforms: the size rule against a hand computation, channels, mean/std, flip TTA."""

import numpy as np
import pytest
import torch
from PIL import Image

from tripletnet.data.images import is_grey, resize_and_crop, resized_size, to_channels
from tripletnet.data.transforms import (
    channel_mean_std,
    choose_channels,
    combine_flip_embeddings,
    normalize,
    with_horizontal_flips,
)
from tripletnet.errors import ParameterError


def _grey(array) -> Image.Image:
    return Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L")


def test_a_wide_image_keeps_its_central_columns_when_its_height_is_already_the_size():
    pixels = np.array([[10, 20, 30, 40, 50], [60, 70, 80, 90, 100]])  # 5 wide, 2 high
    out = np.asarray(resize_and_crop(_grey(pixels), 2))
    # margin 3: the crop starts at 3 // 2 = 1, the extra pixel is cut on the right
    np.testing.assert_array_equal(out, pixels[:, 1:3])


def test_a_tall_image_keeps_its_central_rows():
    pixels = np.arange(8).reshape(4, 2) * 30  # 2 wide, 4 high
    np.testing.assert_array_equal(np.asarray(resize_and_crop(_grey(pixels), 2)), pixels[1:3])


def test_resize_and_crop_matches_a_hand_computed_bilinear_shrink():
    # 4 wide x 8 high -> short side 2: resized to 2 x 4, then rows 1..2 of those 4 are kept.
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(8, 4)).astype(np.float64)
    # Pillow's bilinear shrink by 2 weighs input pixel centres with the triangle 1 - |dx| / 2 around
    # each output centre (input coordinates 1, 3, 5, 7), normalised over the pixels inside the image.
    horizontal = np.array([[0.75, 0.75, 0.25, 0.0], [0.0, 0.25, 0.75, 0.75]]) / 1.75
    kept_rows = np.array([
        [0.0, 0.25, 0.75, 0.75, 0.25, 0.0, 0.0, 0.0],  # output row 1, centred at input 3
        [0.0, 0.0, 0.0, 0.25, 0.75, 0.75, 0.25, 0.0],  # output row 2, centred at input 5
    ]) / 2.0
    expected = kept_rows @ pixels @ horizontal.T
    out = np.asarray(resize_and_crop(_grey(pixels), 2)).astype(np.float64)
    assert out.shape == (2, 2)
    # Pillow rounds to uint8 after each of its two passes: at most one level off the exact value.
    assert np.abs(out - expected).max() <= 1.0, (out, expected)


@pytest.mark.parametrize(
    "size,expected", [((640, 480), (85, 64)), ((480, 640), (64, 85)), ((64, 64), (64, 64)), ((3, 1000), (64, 21333))]
)
def test_the_short_side_becomes_exactly_the_size(size, expected):
    assert resized_size(*size, 64) == expected


def test_any_size_comes_out_square():
    for w, h in ((1, 1), (1, 7), (99, 13), (64, 65)):
        assert resize_and_crop(Image.new("RGB", (w, h)), 28).size == (28, 28)


def test_grey_is_replicated_into_rgb_and_colour_becomes_luma():
    grey = _grey([[0, 128], [255, 7]])
    rgb = to_channels(grey, 3)
    assert rgb.shape == (3, 2, 2) and all(np.array_equal(rgb[c], np.asarray(grey)) for c in range(3))
    colour = Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [100, 150, 200]]], dtype=np.uint8))
    luma = to_channels(colour, 1)[0].astype(np.float64)
    values = np.asarray(colour).astype(np.float64)
    expected = values @ np.array([0.299, 0.587, 0.114])  # ITU-R 601-2
    assert np.abs(luma - expected).max() <= 1.0


def test_sixteen_bit_grey_is_scaled_not_clipped():
    image = Image.fromarray(np.array([[0, 1000], [30000, 60000]], dtype=np.uint16))
    out = to_channels(image, 1)[0]
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) == 4


def test_grey_detection_covers_grey_palettes():
    assert is_grey(Image.new("L", (2, 2))) and not is_grey(Image.new("RGB", (2, 2)))
    palette = Image.new("P", (2, 2))
    palette.putpalette([v for g in range(256) for v in (g, g, g)])
    assert is_grey(palette)
    palette.putpalette([255, 0, 0] + [0] * 765)
    assert not is_grey(palette)


def test_channels_follow_the_data_and_a_mix_is_said_once():
    lines: list[str] = []
    assert choose_channels(5, 0, None, "d", lines.append) == 1 and lines == []
    assert choose_channels(0, 5, None, "d", lines.append) == 3 and lines == []
    assert choose_channels(7, 2, None, "d", lines.append) == 3  # any colour keeps colour
    assert len(lines) == 1 and "7 of 9" in lines[0] and "grey" in lines[0] and "mixes" in lines[0]
    assert choose_channels(0, 4, 1, "d", lines.append) == 1 and "4 of 4" in lines[1]
    with pytest.raises(ParameterError, match="channels"):
        choose_channels(1, 1, 2, "d", lines.append)


def test_mean_and_std_match_numpy_in_float64():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(7, 3, 5, 4), dtype=np.uint8))
    mean, std = channel_mean_std(images)
    as_float = images.numpy().astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, as_float.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, as_float.std(axis=(0, 2, 3)), rtol=1e-9)
    normalised = normalize(images, mean, std).double()
    np.testing.assert_allclose(normalised.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(normalised.std(dim=(0, 2, 3), unbiased=False).numpy(), 1.0, atol=1e-5)


def test_a_flat_channel_normalises_without_dividing_by_zero():
    images = torch.full((2, 1, 3, 3), 9, dtype=torch.uint8)
    mean, std = channel_mean_std(images)
    assert std == (0.0,) and torch.all(normalize(images, mean, std) == 0)


def test_flip_augmentation_mirrors_width_and_combines_either_way():
    images = torch.arange(2 * 1 * 2 * 3).reshape(2, 1, 2, 3)
    both = with_horizontal_flips(images)
    assert both.shape == (4, 1, 2, 3)
    assert torch.equal(both[:2], images) and torch.equal(both[2:], images.flip(-1))
    assert both[2, 0, 0].tolist() == images[0, 0, 0].tolist()[::-1]

    rng = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(6, 5, generator=rng), dim=1)  # 3 originals, 3 mirrors
    mean = combine_flip_embeddings(emb, "mean")
    assert mean.shape == (3, 5)
    torch.testing.assert_close(mean, torch.nn.functional.normalize(emb[:3] + emb[3:], dim=1))
    concat = combine_flip_embeddings(emb, "concat")
    assert concat.shape == (3, 10)
    torch.testing.assert_close(concat.norm(dim=1), torch.ones(3))
    # the concatenated similarity is the mean of the two similarities
    expected = 0.5 * (emb[0] @ emb[1] + emb[3] @ emb[4])
    torch.testing.assert_close(concat[0] @ concat[1], expected)
    with pytest.raises(ParameterError, match="mode"):
        combine_flip_embeddings(emb, "max")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="embeddings"):
        combine_flip_embeddings(emb[:5])


def test_bad_sizes_name_the_parameter():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ParameterError, match="image_size"):
            resize_and_crop(Image.new("L", (4, 4)), bad)  # type: ignore[arg-type]

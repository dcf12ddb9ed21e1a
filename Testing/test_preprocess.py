"""Crops, scaling and their inverses: what goes into a model comes back on the input grid."""

import json

import numpy as np
import pytest

from CMRSynthesisLib.errors import InputError
from CMRSynthesisLib.preprocess import IntensityScale, LVCrop, crop_around, pad_to_multiple, to_dtype


def ring_mask(shape=(50, 60), centre=(20, 35), radius=9):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_crop_at_native_size_restores_exactly_even_past_the_border():
    image = np.random.default_rng(0).normal(size=(50, 60)).astype(np.float32)
    mask = ring_mask(centre=(8, 55))  # near the top-right corner: the 32-pixel box sticks out
    crop = crop_around(mask, size=32, margin=2)
    assert crop.side == 32 and (crop.y0 < 0 or crop.x0 + crop.side > 60)
    patch = crop.extract(image)
    assert patch.shape == (32, 32)
    region, values = crop.restore(patch)
    assert np.array_equal(values, image[region])
    assert mask[region].sum() == mask.sum()  # the whole ROI is covered


def test_large_region_gets_a_bigger_box_resized_to_model_size():
    mask = ring_mask(radius=15)
    crop = crop_around(mask, size=16, margin=2)
    assert crop.side == 31 + 4 and crop.size == 16
    image = np.broadcast_to(np.linspace(0, 1, 60, dtype=np.float32), (50, 60))
    patch = crop.extract(image)
    assert patch.shape == (16, 16)
    region, values = crop.restore(patch)
    assert values.shape == image[region].shape
    assert np.abs(values - image[region]).max() < 0.05  # a smooth ramp survives down- and up-sampling


def test_crop_of_empty_mask_is_refused():
    with pytest.raises(InputError, match="empty"):
        crop_around(np.zeros((8, 8), bool), size=4)


def test_intensity_scale_maps_min_max_to_unit_range_and_back():
    values = np.array([[-30.0, 10.0], [250.0, 90.0]])
    scale = IntensityScale.of(values)
    forward = scale.forward(values)
    assert forward.min() == -1 and forward.max() == 1
    assert np.allclose(scale.inverse(forward), values, atol=1e-4)
    assert IntensityScale.of(np.full((2, 2), 5.0)).forward(np.full((2, 2), 5.0)).max() == -1


def test_to_dtype_rounds_and_clips_integers():
    assert to_dtype(np.array([1.6, -40000.0, 40000.0]), np.int16).tolist() == [2, -32768, 32767]
    assert to_dtype(np.array([1.25]), np.float32).dtype == np.float32


def test_pad_to_multiple():
    padded, shape = pad_to_multiple(np.ones((2, 17, 30)), 16)
    assert padded.shape == (2, 32, 32) and shape == (17, 30) and padded.sum() == 2 * 17 * 30


def test_an_lv_crop_read_back_from_its_json_record_crops_the_same_pixels():
    image = np.random.default_rng(1).normal(size=(50, 60)).astype(np.float32)
    crop = LVCrop((np.float64(21.3), np.float32(30.8)), (1.4, 1.6), 24, 2.0)
    again = LVCrop.from_record(json.loads(json.dumps(crop.record())), (1.4, 1.6))
    patch = crop.extract(image)
    np.testing.assert_array_equal(again.extract(image), patch)
    np.testing.assert_array_equal(again.paste(patch, image.shape), crop.paste(patch, image.shape))

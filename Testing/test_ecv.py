"""ECV: phantom MOLLI native + post-contrast -> fitted T1 maps -> ECV against the value the tissue table implies;
grids, resampling and bad input."""

import numpy as np
import pytest

from CMRSynthesisLib import phantom
from CMRSynthesisLib.analysis.ecv import ecv_map
from CMRSynthesisLib.analysis.t1mapping import t1_maps
from CMRSynthesisLib.errors import GeometryError, InputError
from CMRSynthesisLib.volume import Volume

HAEMATOCRIT = 0.42


@pytest.fixture(scope="module")
def pair():
    """Native and post-contrast T1 maps fitted from noisy phantom MOLLI images of one subject, with its masks."""
    subject = phantom.make_subject(8)
    labels = phantom.render_labels(subject)
    masks = phantom.tissue_masks(labels)
    heart = labels.with_array((masks["heart_roi"] | masks["rv"]).astype(np.uint8))
    native, post = (t1_maps(phantom.render_molli(subject, labels, post_contrast=post), heart)["t1"]
                    for post in (False, True))
    return {"subject": subject, "native": native, "post": post,
            "blood": labels.with_array(masks["blood"].astype(np.uint8)),
            "myocardium": labels.with_array(masks["myocardium"].astype(np.uint8))}


def test_ecv_of_a_phantom_native_post_pair_within_one_point(pair):
    ecv, summary = ecv_map(pair["native"], pair["post"], HAEMATOCRIT, pair["blood"], myocardium=pair["myocardium"])
    truth = phantom.true_ecv_percent(pair["subject"], "lv_myocardium", HAEMATOCRIT)
    assert abs(summary["myocardium_ecv_median_percent"] - truth) < 1.0
    assert ecv.metadata["units"] == "%" and ecv.same_geometry(pair["native"])
    inside = pair["myocardium"].array.astype(bool)
    assert np.all(ecv.array[~inside] == 0)
    blood = pair["subject"].tissues["lv_blood"]
    assert summary["blood_t1_native_ms"] == pytest.approx(blood.t1_native_ms, rel=0.01)
    assert summary["blood_t1_post_ms"] == pytest.approx(blood.t1_post_ms, rel=0.01)


def _cylinder_maps(shift_slices: float) -> tuple[Volume, Volume, Volume]:
    """Native and post maps of a z-constant cylinder (blood core, myocardial ring); the post map's grid is
    shifted along the slice axis by `shift_slices` slices."""
    y, x = np.mgrid[:32, :32] - 15.5
    radius = np.hypot(x, y)
    blood, ring = radius < 6, (radius >= 6) & (radius < 10)
    native = np.where(blood, 1500.0, np.where(ring, 1000.0, 0.0))
    post = np.where(blood, 300.0, np.where(ring, 450.0, 0.0))
    grid = {"spacing": (1.5, 1.5, 8.0), "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}
    native_map = Volume(np.repeat(native[None], 6, 0).astype(np.float32), origin=(0, 0, 0), **grid)
    post_map = Volume(np.repeat(post[None], 6, 0).astype(np.float32), origin=(0, 0, 8.0 * shift_slices), **grid)
    return native_map, post_map, native_map.with_array(np.repeat(blood[None], 6, 0).astype(np.uint8))


def test_maps_at_different_positions_are_refused_unless_resampled():
    native, post, blood = _cylinder_maps(0.5)
    with pytest.raises(GeometryError, match="different grids.*--resample"):
        ecv_map(native, post, HAEMATOCRIT, blood)
    ecv, summary = ecv_map(native, post, HAEMATOCRIT, blood, resample=True)
    expected = 100 * (1 - HAEMATOCRIT) * (1 / 450 - 1 / 1000) / (1 / 300 - 1 / 1500)
    ring = (native.array == 1000) & (ecv.array > 0)
    assert summary["post_contrast_resampled"] and ring[1:-1].sum() == (native.array[1:-1] == 1000).sum()
    np.testing.assert_allclose(ecv.array[ring], expected, rtol=1e-5)
    far_native, far_post, far_blood = _cylinder_maps(20)
    with pytest.raises(GeometryError, match="do not overlap"):
        ecv_map(far_native, far_post, HAEMATOCRIT, far_blood, resample=True)


@pytest.mark.parametrize("haematocrit", [0.05, 0.75, 42.0])
def test_haematocrit_outside_range_is_refused(haematocrit):
    native, post, blood = _cylinder_maps(0)
    with pytest.raises(InputError, match="haematocrit .* outside 0.1-0.7"):
        ecv_map(native, post, haematocrit, blood)


def test_swapped_maps_and_empty_or_misplaced_masks_are_named():
    native, post, blood = _cylinder_maps(0)
    with pytest.raises(InputError, match="swapped"):
        ecv_map(post, native, HAEMATOCRIT, blood)
    with pytest.raises(InputError, match="blood-pool mask selects no voxel"):
        ecv_map(native, post, HAEMATOCRIT, blood.with_array(np.zeros_like(blood.array)))
    shifted = Volume(blood.array, blood.spacing, (0, 0, 4.0), blood.direction)
    with pytest.raises(GeometryError, match="the native T1 map and the blood-pool mask differ in origin"):
        ecv_map(native, post, HAEMATOCRIT, shifted)


def test_maps_of_different_frames_of_reference_are_refused_even_with_resampling():
    native, post, blood = _cylinder_maps(0.5)
    native = native.with_array(native.array, frame_of_reference_uid="1.2.3")
    for resample in (False, True):
        with pytest.raises(GeometryError, match="different DICOM frames of reference.*1.2.3 and 4.5.6"):
            ecv_map(native, post.with_array(post.array, frame_of_reference_uid="4.5.6"), HAEMATOCRIT, blood,
                    resample=resample)
    ecv, _ = ecv_map(native, post.with_array(post.array, frame_of_reference_uid="1.2.3"), HAEMATOCRIT, blood,
                     resample=True)  # one frame of reference (or none stated): accepted
    assert (ecv.array > 0).any()
    with pytest.raises(GeometryError, match="frames of reference"):  # masks are held to it too
        ecv_map(native, post, HAEMATOCRIT, blood.with_array(blood.array, frame_of_reference_uid="7.8"), resample=True)

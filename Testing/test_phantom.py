"""Tests of the synthetic subject model: determinism, splits, anatomy sizes, masks, scar, LGE contrast, phases."""

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes

from CMRSynthesisLib import phantom
from CMRSynthesisLib.errors import GeometryError, InputError

IDS = list(range(10))  # 8 with scar, 2 without


@pytest.fixture(scope="module")
def studies() -> dict[int, dict]:
    return {i: phantom.lge_study(i) for i in IDS}


def _angles_deg(mask: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Screen angles (lateral 0, anterior 90, septal 180) of the mask's pixels about centre (row, col)."""
    rows, cols = np.nonzero(mask)
    return np.degrees(np.arctan2(-(rows - centre[0]), cols - centre[1]))


def _wrap(degrees: np.ndarray) -> np.ndarray:
    return (degrees + 180.0) % 360.0 - 180.0


def _radii_mm(study: dict, k: int, labels: np.ndarray | None = None) -> tuple[float, float]:
    """Equivalent endo- and epicardial radius (mm) of slice k from the blood-pool and wall areas."""
    masks = phantom.tissue_masks(study["labels"]) if labels is None else labels
    pixel_area = study["subject"].geometry.spacing[0] * study["subject"].geometry.spacing[1]
    blood = masks["blood"][k].sum() * pixel_area
    wall = (masks["myocardium"][k] | masks["scar"][k]).sum() * pixel_area
    return float(np.sqrt(blood / np.pi)), float(np.sqrt((blood + wall) / np.pi))


def test_same_id_same_subject_and_images_different_ids_differ(studies):
    again = phantom.lge_study(3)
    assert again["subject"] == studies[3]["subject"]
    np.testing.assert_array_equal(again["lge"].array, studies[3]["lge"].array)
    np.testing.assert_array_equal(again["labels"].array, studies[3]["labels"].array)
    assert studies[3]["subject"] != studies[4]["subject"]
    assert studies[3]["lge"].array.shape != studies[4]["lge"].array.shape or not np.array_equal(
        studies[3]["lge"].array, studies[4]["lge"].array)


def test_splits_are_disjoint_cover_all_ids_and_follow_split_of():
    ids = {split: phantom.subject_ids(split, 20) for split in phantom.SPLITS}
    for split, chosen in ids.items():
        assert chosen == sorted(chosen) and len(chosen) == 20
        assert all(phantom.split_of(i) == split for i in chosen)
    assert not set(ids["train"]) & set(ids["validation"]) and not set(ids["train"]) & set(ids["test"])
    assert not set(ids["validation"]) & set(ids["test"])
    assert {phantom.split_of(i) for i in range(10)} == set(phantom.SPLITS) - {"ood"}
    assert not set(ids["ood"]) & (set(ids["train"]) | set(ids["validation"]) | set(ids["test"]))
    assert [phantom.split_of(i) for i in range(10)].count("train") == 7
    with pytest.raises(InputError, match="split"):
        phantom.subject_ids("training", 3)
    with pytest.raises(InputError, match="non-negative"):
        phantom.make_subject(-1)


def test_geometry_is_a_short_axis_stack_shared_by_every_output(studies):
    for study in studies.values():
        lge, labels = study["lge"], study["labels"]
        nz, ny, nx = lge.array.shape
        assert 7 <= nz <= 14 and 96 <= min(ny, nx) and max(ny, nx) <= 256 and ny % 8 == nx % 8 == 0
        assert 1.1 <= lge.spacing[0] == lge.spacing[1] <= 2.0 and 6.0 <= lge.spacing[2] <= 12.0
        assert 160.0 <= nx * lge.spacing[0] <= 280.0 and 140.0 <= ny * lge.spacing[1] <= 280.0  # field of view, mm
        direction = np.asarray(lge.direction).reshape(3, 3)
        np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-9)
        assert np.linalg.det(direction) == pytest.approx(1.0)
        assert abs(direction[2, 2]) < 0.95  # oblique: the slice normal is not the scanner's z axis
        lge.require_same_geometry(labels)
        assert labels.array.dtype == np.uint8 and set(np.unique(labels.array)) <= set(phantom.LABELS.values())
        for mask in study["masks"].values():
            assert mask.shape == lge.array.shape and mask.dtype == bool


def test_lv_cavity_and_wall_sizes_measured_from_masks(studies):
    for study in studies.values():
        subject = study["subject"]
        depths = phantom.slice_depths_mm(subject)
        basal_mid = np.flatnonzero(depths <= 0.5 * subject.lv.length_mm)
        assert basal_mid.size >= 3
        for k in basal_mid:
            r_in, r_out = _radii_mm(study, k)
            assert 45.0 <= 2 * r_in <= 55.0
            assert 7.0 <= r_out - r_in <= 12.0
        apical = int(np.argmax(depths))
        assert 2 * _radii_mm(study, apical)[0] < 0.8 * 2 * _radii_mm(study, basal_mid[0])[0]


def test_masks_are_disjoint_and_heart_roi_is_their_union(studies):
    for study in studies.values():
        masks = study["masks"]
        parts = [masks["myocardium"], masks["scar"], masks["blood"], masks["rv"]]
        assert (np.sum(parts, axis=0) <= 1).all()
        np.testing.assert_array_equal(masks["heart_roi"], masks["myocardium"] | masks["scar"] | masks["blood"])
        assert masks["rv"].any() and masks["blood"].any() and masks["myocardium"].any()


def test_rv_lies_on_the_septal_side(studies):
    for study in studies.values():
        masks, k = study["masks"], int(np.argmin(phantom.slice_depths_mm(study["subject"])))
        centre = np.argwhere(masks["blood"][k]).mean(axis=0)
        rv_blood = study["labels"].array[k] == phantom.LABELS["rv_blood"]
        angles = _angles_deg(rv_blood, centre)
        assert np.abs(_wrap(np.degrees(np.angle(np.exp(1j * np.radians(angles)).mean())) - 180.0)) < 45.0


def test_scar_sits_in_the_wall_of_one_territory_over_contiguous_slices(studies):
    scarred = [s for s in studies.values() if s["subject"].scar is not None]
    assert scarred and len(scarred) < len(studies)
    for study in scarred:
        scar_model, masks = study["subject"].scar, study["masks"]
        scar_slices = np.flatnonzero(masks["scar"].any(axis=(1, 2)))
        assert scar_slices.size and np.array_equal(scar_slices, np.arange(scar_slices[0], scar_slices[-1] + 1))
        all_angles = []
        for k in scar_slices:
            ring = masks["myocardium"][k] | masks["scar"][k]
            assert not (masks["scar"][k] & ~binary_fill_holes(ring)).any()  # inside the epicardium
            assert (binary_fill_holes(ring) & ~ring == masks["blood"][k]).all()  # the wall still encloses the pool
            angles = _angles_deg(masks["scar"][k], np.argwhere(masks["blood"][k]).mean(axis=0))
            mean = np.degrees(np.angle(np.exp(1j * np.radians(angles)).mean()))
            assert np.abs(_wrap(angles - mean)).max() <= 55.0 + 8.0  # extent at most 110 degrees (+ pixels)
            all_angles.append(angles)
        angles = np.concatenate(all_angles)
        mean = np.degrees(np.angle(np.exp(1j * np.radians(angles)).mean()))
        low, high = phantom.TERRITORY_CENTRES_DEG[scar_model.territory]
        assert _wrap(mean - low) >= -25.0 and _wrap(mean - high) <= 25.0
    assert all(not s["masks"]["scar"].any() for s in studies.values() if s["subject"].scar is None)


def test_about_a_fifth_of_subjects_have_no_scar():
    without = sum(phantom.make_subject(i).scar is None for i in range(200))
    assert 20 <= without <= 60


def test_lge_contrast_dtype_range_and_metadata(studies):
    cnr = []
    for study in studies.values():
        image, masks = study["lge"].array, study["masks"]
        assert image.dtype == np.int16 and image.min() >= 0 and 500 <= image.max() <= 6000
        myocardium, blood = image[masks["myocardium"]], image[masks["blood"]]
        assert blood.mean() > 1.3 * myocardium.mean()
        assert blood.mean() > np.median(image)
        if masks["scar"].any():
            scar = image[masks["scar"]]
            assert scar.mean() > myocardium.mean()
            cnr.append((scar.mean() - myocardium.mean()) / myocardium.std())
        metadata = study["lge"].metadata
        assert metadata["modality"] == "MR" and metadata["contrast"] == "LGE" and metadata["units"] == "a.u."
        assert metadata["phantom_subject"] == study["subject"].subject_id
        assert 150.0 < metadata["inversion_time_ms"] < 700.0
    assert max(cnr) > 2.5 * min(cnr)  # contrast varies: some subjects are poorly nulled or noisy


def test_systolic_phase_has_smaller_cavity_and_thicker_wall(studies):
    study = studies[2]
    systole = phantom.tissue_masks(phantom.render_labels(study["subject"], phase=0.3))
    k = int(np.argmin(phantom.slice_depths_mm(study["subject"])))
    r_in_ed, r_out_ed = _radii_mm(study, k)
    r_in_es, r_out_es = _radii_mm(study, k, systole)
    assert r_in_es < 0.85 * r_in_ed
    assert r_out_es - r_in_es > 1.2 * (r_out_ed - r_in_ed)
    wall_ed = (study["masks"]["myocardium"] | study["masks"]["scar"]).sum()
    wall_es = (systole["myocardium"] | systole["scar"]).sum()
    assert wall_es == pytest.approx(wall_ed, rel=0.1)  # myocardium is incompressible
    with pytest.raises(InputError, match="phase"):
        phantom.render_labels(study["subject"], phase=1.0)


def test_render_lge_refuses_labels_on_another_grid(studies):
    subject = studies[1]["subject"]
    other = studies[2]["labels"]
    with pytest.raises(GeometryError, match="phantom subject 1"):
        phantom.render_lge(subject, other)
    moved = dataclasses.replace(subject.geometry, origin=(0.0, 0.0, 0.0)).volume(studies[1]["labels"].array)
    with pytest.raises(GeometryError, match="origin"):
        phantom.render_lge(subject, moved)

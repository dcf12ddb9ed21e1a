"""Slices of two stacks matched by position (slice_matching.py): exact on one grid, in-plane resampling on another
(exact for a linear field), unmatched slices named, and refusals for other planes, other frames of reference and
stacks that do not overlap."""

import math

import numpy as np
import pytest
from scipy import ndimage

from CMRSynthesisLib.errors import GeometryError
from CMRSynthesisLib.slice_matching import match_slices, onto_reference_slices
from CMRSynthesisLib.volume import Volume

ROW = np.array([0.6, 0.8, 0.0])
COLUMN = np.array([0.0, 0.0, -1.0])


def _stack(slices: int, size: int, pixel: float, *, thickness: float = 8.0, first_mm: float = 0.0,
           centre: tuple[float, float] = (0.0, 0.0), tilt_deg: float = 0.0, **metadata) -> Volume:
    """A short-axis-like stack: rows along ROW, columns along COLUMN (tilted about ROW by tilt_deg), slices along
    the normal from first_mm, the in-plane grid centred on `centre` (mm along ROW, COLUMN)."""
    angle = math.radians(tilt_deg)
    normal0 = np.cross(ROW, COLUMN)
    column = math.cos(angle) * COLUMN + math.sin(angle) * normal0
    normal = np.cross(ROW, column)
    half = (size - 1) / 2 * pixel
    origin = (first_mm * normal + (centre[0] - half) * ROW + (centre[1] - half) * column)
    direction = np.column_stack([ROW, column, normal]).ravel()
    return Volume(np.zeros((slices, size, size), np.float32), (pixel, pixel, thickness), tuple(origin),
                  tuple(direction), dict(metadata))


def _linear_field(volume: Volume) -> np.ndarray:
    """f = 2 x - 3 y + 0.5 z (LPS mm) at every voxel of `volume`: (z, y, x)."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in volume.spatial_shape), indexing="ij")
    points = volume.index_to_physical() @ np.stack([x.ravel(), y.ravel(), z.ravel(), np.ones(x.size)])
    return (2 * points[0] - 3 * points[1] + 0.5 * points[2]).reshape(volume.spatial_shape)


def test_one_grid_is_copied_exactly():
    cine = _stack(4, 16, 1.8)
    values = np.random.default_rng(0).random((3, 4, 16, 16)).astype(np.float32)
    out, covered, notes = onto_reference_slices(values, cine, cine)
    assert np.array_equal(out, values) and covered.all() and notes == []


def test_another_in_plane_grid_is_resampled_in_plane_exactly_for_a_linear_field():
    cine = _stack(5, 40, 1.6)
    molli = _stack(5, 26, 2.3, centre=(3.0, -2.0))  # 60 mm against the cine's 64 mm, shifted
    field = _linear_field(molli)
    out, covered, notes = onto_reference_slices(field[None], molli, cine, reference_name="the cine",
                                                moving_name="the MOLLI images")
    truth = _linear_field(cine)
    assert covered.sum() > 0.7 * covered.size and not covered.all()  # the MOLLI's smaller field of view
    inner = ndimage.binary_erosion(covered, np.ones((1, 3, 3), bool))  # the edge half-pixel repeats edge values
    np.testing.assert_allclose(out[0][inner], truth[inner], atol=1e-3)
    assert np.all(out[0][~covered] == 0)
    assert any("resampled in-plane onto 5 slice(s) of the cine" in note for note in notes)


def test_slices_without_a_partner_are_left_out_and_named_and_a_small_offset_is_matched():
    cine = _stack(8, 16, 1.8)
    molli = _stack(3, 16, 1.8, first_mm=3 * 8.0 + 2.5)  # cine slices 4-6 (from 1), 2.5 mm off
    matches, notes = match_slices(cine, molli, reference_name="the cine", moving_name="the MOLLI images")
    assert [(m.reference, m.moving) for m in matches] == [(3, 0), (4, 1), (5, 2)]
    assert all(m.distance_mm == pytest.approx(2.5) for m in matches)
    assert notes == [("5 slice(s) of the cine (1, 2, 3, 7, 8, counted from 1) have no slice of the MOLLI images "
                      "within 4.0 mm: left out")]


def test_stacks_that_do_not_overlap_other_planes_and_frames_of_reference_are_refused():
    cine = _stack(4, 16, 1.8)
    with pytest.raises(GeometryError, match="no slice of the cine lies within 4.0 mm.*different parts"):
        match_slices(cine, _stack(3, 16, 1.8, first_mm=60.0), reference_name="the cine")
    with pytest.raises(GeometryError, match="not in the plane.*30.0 degrees"):
        match_slices(cine, _stack(4, 16, 1.8, tilt_deg=30.0))
    with pytest.raises(GeometryError, match="different DICOM frames of reference"):
        match_slices(cine.with_array(cine.array, frame_of_reference_uid="1.2"),
                     _stack(4, 16, 1.8, frame_of_reference_uid="3.4"))
    tilted, _ = match_slices(cine, _stack(4, 16, 1.8, tilt_deg=3.0))  # a few degrees: still the same stack
    assert len(tilted) >= 3
    with pytest.raises(GeometryError, match=r"shape \(4, 16, 16\); expected \(channels, 4, 16, 16\)"):
        onto_reference_slices(np.zeros((4, 16, 16)), cine, cine)


def test_a_slightly_tilted_stack_with_a_large_field_of_view_is_matched_at_the_heart():
    """Slices that meet at the centre of the field of view (where the heart is) but 3 degrees apart: at a corner of a
    360 mm field of view the planes lie about 13 mm apart, more than a slice; the match must not move."""
    cine = _stack(10, 256, 1.4)
    molli = _stack(10, 192, 1.9, tilt_deg=3.0)
    matches, notes = match_slices(cine, molli)
    assert [(m.reference, m.moving) for m in matches] == [(z, z) for z in range(10)] and notes == []
    assert max(m.distance_mm for m in matches) < 1.0

"""Myocardial strain against closed-form motion, ED / ES from the LV volume curve, and `cmrsynth strain`.

The synthetic cine: an incompressible thickening ring. A material point at ED radius R lies at
r(t) = sqrt(R^2 - Ri^2 + ri(t)^2) when the cavity radius goes from Ri to ri(t), so its Green-Lagrange strains are
E_cc = (r^2 / R^2 - 1) / 2 and E_rr = (R^2 / r^2 - 1) / 2. A random texture is attached to the tissue (sampled at
each pixel's material coordinates), the blood is bright and featureless, the surroundings darker and moving with
the same incompressible flow."""

from __future__ import annotations

import json
import math
import sys
import types

import nibabel
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, map_coordinates

from CMRSynthesisLib.analysis.aha import aha_segments
from CMRSynthesisLib.analysis.cardiac_phases import blood_pool_volumes_ml, ed_es_frames
from CMRSynthesisLib.analysis.strain import (
    core_myocardium,
    displacement_gradient,
    green_lagrange,
    myocardial_strain,
    radial_circumferential,
    slice_kinematics,
)
from CMRSynthesisLib.cli import main
from CMRSynthesisLib.errors import Cancelled, GeometryError, InputError
from CMRSynthesisLib.io import read_volume, write_volume
from CMRSynthesisLib.io.cine import write_cine
from CMRSynthesisLib.volume import Volume

TEXTURE_MM, TEXTURE_STEP_MM = 80.0, 0.5  # texture grid: +-80 mm at 0.5 mm
SEGMENTER = "CMRSynthesisLib.methods.cine_segmentation"


def ring_cine(*, size: int = 72, frames: int = 16, spacing: tuple[float, float] = (1.25, 1.25), inner: float = 20.0,
              outer: float = 29.0, inner_es: float = 12.5, rotation_deg: float = 0.0,
              shift_mm: tuple[float, float] = (0.0, 0.0), akinetic_deg: float | None = None, noise: float = 0.02,
              seed: int = 0) -> dict:
    """A one-slice cine (t, 1, size, size) of a ring contracting from ED (frame 0) to ES (frames // 2) and back.

    spacing: (row, col) mm. inner / outer: cavity and epicardial radius at ED (mm); inner_es: cavity radius at ES.
    rotation_deg, shift_mm: a rigid motion (row, col mm) added in step with the contraction. akinetic_deg: the
    image angle (atan2(row, col)) of a sector +-50 degrees wide, fading over 30 degrees, where the cavity does not
    move. Returns the cine Volume, the ED masks (z, y, x) "myocardium", "blood", "rv" (a crescent beside the
    ring), "labels" of every frame (t, z, y, x; 1 LV blood, 2 LV myocardium, 3 RV as the cine segmenter writes them),
    "angle" (rad, of each ED pixel), "motion" (1 moving, 0 akinetic) and the true global "circumferential" and
    "radial" curves over the core voxels (the ED myocardium eroded by one pixel)."""
    rng = np.random.default_rng(seed)
    texture_size = int(2 * TEXTURE_MM / TEXTURE_STEP_MM) + 1
    texture = gaussian_filter(rng.standard_normal((texture_size, texture_size)), 1.5)
    texture /= texture.std()
    row_mm, col_mm = spacing
    rows, cols = np.mgrid[:size, :size].astype(float)
    y = rows * row_mm - ((size - 1) / 2 * row_mm + 0.3)
    x = cols * col_mm - ((size - 1) / 2 * col_mm - 0.2)
    phase = 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(frames) / frames))

    def motion(theta: np.ndarray) -> np.ndarray:
        if akinetic_deg is None:
            return np.ones_like(theta)
        distance = np.abs(np.degrees(np.angle(np.exp(1j * (theta - math.radians(akinetic_deg))))))
        return np.clip((distance - 50.0) / 30.0, 0.0, 1.0)

    images = np.empty((frames, 1, size, size), dtype=np.float32)
    labels = np.zeros((frames, 1, size, size), dtype=np.uint8)
    for t, s in enumerate(phase):
        angle = math.radians(rotation_deg) * s
        dy, dx = y - shift_mm[0] * s, x - shift_mm[1] * s
        qy = math.cos(angle) * dy - math.sin(angle) * dx  # rotate back by the frame's angle
        qx = math.sin(angle) * dy + math.cos(angle) * dx
        rho, theta = np.hypot(qx, qy), np.arctan2(qy, qx)
        cavity = inner - (inner - inner_es) * s * motion(theta)
        radius = np.sqrt(np.maximum(rho**2 - cavity**2 + inner**2, 0.0))
        where = [(radius * np.sin(theta) + TEXTURE_MM) / TEXTURE_STEP_MM,
                 (radius * np.cos(theta) + TEXTURE_MM) / TEXTURE_STEP_MM]
        tissue = np.where(radius < outer, 0.45, 0.2) + 0.08 * map_coordinates(texture, where, order=1)
        images[t, 0] = np.where(rho < cavity, 1.0, tissue) + noise * rng.standard_normal((size, size))
        labels[t, 0] = np.where(rho < cavity, 1, np.where(radius < outer, 2, 0))

    radius, theta = np.hypot(x, y), np.arctan2(y, x)
    myocardium = (radius >= inner) & (radius < outer)
    core = core_myocardium(myocardium)
    moved_sq = radius[core] ** 2 - inner**2 + (inner - (inner - inner_es) * phase[:, None]) ** 2
    rv = (radius >= outer + 0.5) & (radius < outer + 10.0) & (
        np.abs(np.degrees(np.angle(np.exp(1j * (theta - math.radians(170.0)))))) < 55.0)
    labels[:, :, rv] = 3
    cine = Volume(images, spacing=(col_mm, row_mm, 8.0),
                  metadata={"trigger_times_ms": [40.0 * t for t in range(frames)]})
    return {"cine": cine, "myocardium": myocardium[None].astype(np.uint8), "blood": (radius < inner)[None],
            "rv": rv[None], "labels": labels, "angle": theta,
            "motion": motion(theta), "circumferential": 0.5 * (moved_sq / radius[core] ** 2 - 1.0).mean(axis=1),
            "radial": 0.5 * (radius[core] ** 2 / moved_sq - 1.0).mean(axis=1)}


@pytest.fixture(scope="module")
def iso_ring() -> dict:
    ring = ring_cine()
    return {**ring, "result": myocardial_strain(ring["cine"], ring["myocardium"], blood_pool_ed=ring["blood"])}


# --- the maths on arrays ----------------------------------------------------------------------------------------


def test_green_lagrange_is_zero_for_a_rotation_and_exact_for_a_stretch():
    angle = 0.4
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    gradient = np.broadcast_to((rotation - np.eye(2))[:, :, None, None], (2, 2, 3, 4))
    assert np.allclose(green_lagrange(gradient), 0.0, atol=1e-12)
    stretch = np.zeros((2, 2, 1, 1))
    stretch[0, 0], stretch[1, 0] = 0.2, 0.1  # du_row/drow = 0.2, du_col/drow = 0.1 (a shear)
    strain = green_lagrange(stretch)[..., 0, 0]
    expected = 0.5 * (np.array([[1.2, 0.0], [0.1, 1.0]]).T @ np.array([[1.2, 0.0], [0.1, 1.0]]) - np.eye(2))
    assert np.allclose(strain, expected)


def test_displacement_gradient_is_exact_for_a_linear_field_on_anisotropic_pixels():
    spacing = (1.6, 0.9)
    rows, cols = np.mgrid[:20, :24] * np.array(spacing)[:, None, None]
    field = np.stack([0.05 * rows - 0.02 * cols + 3.0, 0.01 * rows + 0.07 * cols])  # mm
    mask = np.zeros((20, 24), dtype=bool)
    mask[4:15, 3:20] = True
    mask[9, 19:] = True  # a one-pixel spur: no 2D support at its tip
    gradient = displacement_gradient(field, mask, spacing)
    inside = mask.copy()
    inside[9, 21:] = False
    assert np.allclose(gradient[..., inside].reshape(2, 2, -1),
                       np.array([[0.05, -0.02], [0.01, 0.07]])[..., None], atol=1e-9)
    assert np.isnan(gradient[..., ~mask]).all() and np.isnan(gradient[..., 9, 23]).all()


def test_radial_and_circumferential_projections():
    strain = np.zeros((2, 2, 5, 5))
    strain[0, 0] = 0.3  # pure row-direction strain
    radial, circumferential = radial_circumferential(strain, (2.0, 2.0), (1.0, 1.0))
    assert radial[0, 2] == pytest.approx(0.3) and circumferential[0, 2] == pytest.approx(0.0)  # above the centre
    assert radial[2, 0] == pytest.approx(0.0) and circumferential[2, 0] == pytest.approx(0.3)  # left of it
    assert np.isnan(radial[2, 2])


# --- closed-form motion -----------------------------------------------------------------------------------------


def test_global_peaks_match_the_closed_form(iso_ring):
    result = iso_ring["result"]
    truth_cc, truth_rr = iso_ring["circumferential"].min(), iso_ring["radial"].max()
    assert truth_cc < -0.15 and truth_rr > 0.25
    assert result.global_peak_circumferential < 0 < result.global_peak_radial
    assert abs(result.global_peak_circumferential - truth_cc) < 0.03
    assert abs(result.global_peak_radial - truth_rr) < 0.08
    assert np.abs(result.global_circumferential - iso_ring["circumferential"]).max() < 0.03
    assert result.global_circumferential[0] == 0.0 and result.global_radial[0] == 0.0  # ED is the reference
    assert abs(result.es_frame - 8) <= 1 and result.es_source != "user"
    assert result.segments is None and any("no RV mask" in note for note in result.notes)


def test_maps_are_on_the_ed_grid_with_nan_outside_the_myocardium(iso_ring):
    result, myocardium = iso_ring["result"], iso_ring["myocardium"].astype(bool)
    assert result.radial.array.shape == iso_ring["cine"].array.shape
    assert result.radial.same_geometry(iso_ring["cine"])
    assert np.isnan(result.circumferential.array[:, ~myocardium]).all()
    assert np.isfinite(result.circumferential.array[:, myocardium]).all()
    peak = result.peak_circumferential.array[myocardium]
    assert np.array_equal(peak, np.min(result.circumferential.array[:, myocardium], axis=0))
    assert result.radial.metadata["trigger_times_ms"] == iso_ring["cine"].metadata["trigger_times_ms"]
    summary = result.summary()
    json.dumps(summary)
    assert summary["global_peak_circumferential_strain"] == result.global_peak_circumferential


def test_anisotropic_pixels_give_the_same_strain():
    ring = ring_cine(spacing=(1.6, 1.1), size=64, frames=10, seed=1)
    result = myocardial_strain(ring["cine"], ring["myocardium"])  # centre from the filled myocardium
    assert abs(result.global_peak_circumferential - ring["circumferential"].min()) < 0.03
    assert abs(result.global_peak_radial - ring["radial"].max()) < 0.08


def test_a_rigid_rotation_and_translation_gives_no_strain():
    ring = ring_cine(inner_es=20.0, rotation_deg=8.0, shift_mm=(3.0, -2.5), frames=6, seed=2)
    result = myocardial_strain(ring["cine"], ring["myocardium"], es_frame=3)
    assert np.abs(result.global_circumferential).max() < 0.015
    assert np.abs(result.global_radial).max() < 0.03
    assert result.es_source == "user"


def test_projected_displacement_of_eq_2_matches_the_closed_form_motion():
    """CPKDM's eq. 2 channels: the thickening ring's points move inwards by R - r(t) with no circumferential
    displacement; a rigid rotation by 8 degrees moves them by about R sin(8 deg) along e_c and hardly along e_r."""
    ring = ring_cine(frames=8, seed=4)
    core = core_myocardium(ring["myocardium"][0].astype(bool))
    maps = slice_kinematics(ring["cine"].array[:, 0], ring["myocardium"][0], (1.25, 1.25), blood_pool=ring["blood"][0])
    assert set(maps) == {"radial_strain", "circumferential_strain", "radial_displacement_mm",
                         "circumferential_displacement_mm"}
    assert np.isnan(maps["radial_displacement_mm"][:, ~ring["myocardium"][0].astype(bool)]).all()
    rows, cols = np.nonzero(core)
    size = ring["cine"].array.shape[-1]
    radius = np.hypot((rows - (size - 1) / 2) * 1.25 - 0.3, (cols - (size - 1) / 2) * 1.25 + 0.2)
    moved = np.sqrt(radius**2 - 20.0**2 + 12.5**2)  # ES (frame 4): cavity radius 12.5 mm
    assert maps["radial_displacement_mm"][4][core].mean() == pytest.approx((moved - radius).mean(), abs=0.3)
    assert (moved - radius).mean() < -3.0
    assert abs(np.nanmean(maps["circumferential_displacement_mm"][4][core])) < 0.3

    rotating = ring_cine(inner_es=20.0, rotation_deg=8.0, frames=6, seed=5)
    turned = slice_kinematics(rotating["cine"].array[:, 0], rotating["myocardium"][0], (1.25, 1.25),
                              blood_pool=rotating["blood"][0])
    # The ring turns its material from image angle theta to theta + 8 degrees (atan2(row, col)): tangent (row, col)
    # = (cos, -sin) theta, which is -e_c for e_c = e_r turned by +90 degrees in (row, col) order.
    expected = -radius.mean() * math.sin(math.radians(8.0))
    assert turned["circumferential_displacement_mm"][3][core].mean() == pytest.approx(expected, rel=0.05)
    assert abs(turned["radial_displacement_mm"][3][core].mean()) < 0.4


def test_an_akinetic_sector_shows_in_its_aha_segments():
    ring = ring_cine(akinetic_deg=-10.0, frames=10, seed=3)
    result = myocardial_strain(ring["cine"], ring["myocardium"], blood_pool_ed=ring["blood"], rv_ed=ring["rv"])
    labels = result.segmentation.labels.array[0]
    core = core_myocardium(ring["myocardium"])[0]
    present = [row for row in result.segments if not row["missing"]]
    assert {row["segment"] for row in present} == set(range(7, 13))  # one slice: the mid level
    motion = {row["segment"]: ring["motion"][core & (labels == row["segment"])].mean() for row in present}
    still = [row for row in present if motion[row["segment"]] < 0.2]
    moving = [row for row in present if motion[row["segment"]] > 0.85]
    assert still and len(moving) >= 3
    assert max(abs(row["peak_circumferential"]) for row in still) < min(abs(row["peak_circumferential"])
                                                                        for row in moving)
    assert max(row["peak_radial"] for row in still) < min(row["peak_radial"] for row in moving)
    same = aha_segments(Volume(ring["myocardium"], ring["cine"].spacing), blood_pool=ring["blood"], rv=ring["rv"], allow_missing=True)
    assert np.array_equal(same.labels.array, result.segmentation.labels.array)


def test_ed_other_than_the_first_frame_and_progress_and_cancel():
    ring = ring_cine(size=64, frames=5, seed=4)
    seen = []
    result = myocardial_strain(ring["cine"], ring["myocardium"], ed_frame=2,
                               progress=lambda fraction, message: seen.append(fraction))
    myocardium = ring["myocardium"].astype(bool)
    assert np.all(result.radial.array[2][myocardium] == 0.0)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    with pytest.raises(Cancelled):
        myocardial_strain(ring["cine"], ring["myocardium"], progress=lambda fraction, message: fraction < 0.5)


@pytest.mark.parametrize("case", ["3D", "one frame", "mask off grid", "mask shape", "ED out of range",
                                  "ES out of range", "times", "NaN", "RV and points"])
def test_bad_input_is_refused(case):
    ring = ring_cine(size=40, frames=3, outer=16.0, inner=10.0, inner_es=8.0)
    cine, myocardium = ring["cine"], ring["myocardium"]
    options: dict = {}
    expected = {"3D": (InputError, "time axis"), "one frame": (InputError, "one frame"),
                "mask off grid": (GeometryError, "does not overlap"), "mask shape": (GeometryError, "shape"),
                "ED out of range": (InputError, "ED frame 3"), "ES out of range": (InputError, "ES frame -1"),
                "times": (InputError, "trigger times"), "NaN": (InputError, "NaN"),
                "RV and points": (InputError, "not both")}[case]
    if case == "3D":
        cine = Volume(cine.array[0])
    elif case == "one frame":
        cine = Volume(cine.array[:1])
    elif case == "mask off grid":
        myocardium = Volume(myocardium, origin=(500.0, 0.0, 0.0))
    elif case == "mask shape":
        myocardium = myocardium[:, :-1]
    elif case == "ED out of range":
        options["ed_frame"] = 3
    elif case == "ES out of range":
        options["es_frame"] = -1
    elif case == "times":
        cine.metadata["trigger_times_ms"] = [0.0, 40.0, 40.0]
    elif case == "NaN":
        cine.array[1, 0, 3, 3] = np.nan
    else:
        options.update(rv_ed=ring["rv"], insertion_points=[[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    with pytest.raises(expected[0], match=expected[1]):
        myocardial_strain(cine, myocardium, **options)


# --- ED / ES ------------------------------------------------------------------------------------------------------


def test_ed_and_es_from_the_blood_pool_volume_curve():
    labels = np.zeros((6, 2, 10, 10), dtype=np.uint8)
    for t, half_width in enumerate([3, 4, 4, 2, 1, 2]):  # ED: frame 1 (tie with 2: the first), ES: frame 4
        labels[t, :, 5 - half_width:5 + half_width, 5 - half_width:5 + half_width] = 1
    labels[:, :, 0, :] = 2  # myocardium does not count
    volumes = blood_pool_volumes_ml(labels, (1.5, 1.5, 8.0))
    assert volumes[1] == pytest.approx(2 * 64 * 1.5 * 1.5 * 8.0 / 1000.0)
    assert ed_es_frames(volumes) == (1, 4)
    assert ed_es_frames([120.0, 50.0, 50.0, 80.0]) == (0, 1)


@pytest.mark.parametrize("curve,message", [([], "at least 2"), ([70.0], "at least 2"), ([0.0, 0.0, 0.0], "no LV blood"),
                                           ([55.0, 55.0], "does not change"), ([60.0, np.nan], "NaN")])
def test_ed_es_refuses_curves_without_information(curve, message):
    with pytest.raises(InputError, match=message):
        ed_es_frames(curve)


def test_blood_pool_volumes_need_4d_labels():
    with pytest.raises(InputError, match="4D"):
        blood_pool_volumes_ml(np.zeros((2, 4, 4)), (1.0, 1.0, 1.0))


# --- the command line ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_study(tmp_path_factory) -> dict:
    """A tiny cine (8 frames, 56 x 56) written as 4D NIfTI, its ED masks, and insertion points in RAS."""
    folder = tmp_path_factory.mktemp("strain_inputs")
    ring = ring_cine(size=56, frames=8, inner=14.0, outer=21.0, inner_es=9.0, seed=5)
    cine = ring["cine"]
    paths = {"cine": write_cine(cine, folder / "cine.nii.gz"),
             "myocardium": write_volume(Volume(ring["myocardium"], cine.spacing), folder / "myocardium.nrrd"),
             "rv": write_volume(Volume(ring["rv"].astype(np.uint8), cine.spacing), folder / "rv.nrrd"),
             "still": write_volume(Volume(cine.array[0], cine.spacing), folder / "frame0.nii.gz"),
             "single": write_volume(Volume(cine.array[:1], cine.spacing), folder / "single.nii.gz"),
             "shifted": write_volume(Volume(ring["myocardium"], cine.spacing, origin=(300.0, 0.0, 0.0)),
                                     folder / "shifted.nrrd")}
    # insertion points (LPS) on the epicardium at image angles 115 and 225 degrees about the centre, given in RAS
    centre = np.array([(56 - 1) / 2 * 1.25 - 0.2, (56 - 1) / 2 * 1.25 + 0.3])  # (x, y) mm
    points = [centre + 21.0 * np.array([math.cos(math.radians(a)), math.sin(math.radians(a))]) for a in (115, 225)]
    text = ";".join(f"{-x:.2f},{-y:.2f},0" for x, y in points)
    return {"paths": paths, "points": text, "folder": folder}


def test_cli_writes_maps_json_and_figures(small_study, tmp_path, capsys):
    paths, out = small_study["paths"], tmp_path / "strain"
    code = main(["strain", "--cine", str(paths["cine"]), "--myocardium", str(paths["myocardium"]),
                 f"--insertion-points={small_study['points']}", "--out-dir", str(out), "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    document = json.loads((out / "strain.json").read_text())
    assert document == result["summary"]
    for key in ("ed_frame", "es_frame", "ed_es_source", "global_peak_circumferential_strain",
                "global_peak_radial_strain", "curves", "segments", "notes"):
        assert key in document
    assert document["ed_frame"] == 0 and document["ed_es_source"]["ed"].startswith("frame 0")
    assert document["global_peak_circumferential_strain"] < 0 < document["global_peak_radial_strain"]
    assert len(document["curves"]["global_circumferential"]) == 8
    assert any("R wave" in note for note in document["notes"])
    assert any("peak global circumferential shortening" in note for note in document["notes"])
    mid = [row for row in document["segments"] if 7 <= row["segment"] <= 12]
    assert all(not row["missing"] and row["peak_circumferential"] < 0 for row in mid)
    radial = read_volume(out / "strain_radial.nii.gz")  # NaN outside the myocardium: a map, not a cine image
    assert radial.array.shape == (8, 1, 56, 56) and np.isfinite(radial.array).sum() == 8 * read_volume(
        paths["myocardium"]).array.sum()
    times = json.loads((out / "strain_radial.json").read_text())["trigger_times_ms"]
    assert times == document["curves"]["trigger_time_ms"] == [40.0 * t for t in range(8)]
    header = nibabel.load(out / "strain_radial.nii.gz").header  # other readers take the frame interval from here
    assert header.get_xyzt_units()[1] == "sec" and header["pixdim"][4] == pytest.approx(0.040)
    assert read_volume(out / "strain_circumferential_peak.nii.gz").array.shape == (1, 56, 56)
    assert (out / "strain_aha_segments.nrrd").is_file()
    for name in ("strain_curves.png", "strain_bullseye.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(result["outputs"]) == {"radial", "circumferential", "radial_peak", "circumferential_peak",
                                      "segments", "json", "curves", "bullseye", "radial_times",
                                      "circumferential_times"}


def test_cli_with_rv_mask_and_user_phases(small_study, tmp_path, capsys):
    paths, out = small_study["paths"], tmp_path / "strain"
    code = main(["strain", "--cine", str(paths["cine"]), "--myocardium", str(paths["myocardium"]), "--rv",
                 str(paths["rv"]), "--ed", "0", "--es", "4", "--out-dir", str(out), "--progress", "json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and lines[-1]["type"] == "result"
    fractions = [line["fraction"] for line in lines[:-1]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    document = json.loads((out / "strain.json").read_text())
    assert document["es_frame"] == 4 and document["ed_es_source"] == {"ed": "user", "es": "user"}


def test_cli_rerun_without_segments_leaves_no_stale_segment_files(small_study, tmp_path, capsys):
    paths, out = small_study["paths"], tmp_path / "strain"
    base = ["strain", "--cine", str(paths["cine"]), "--myocardium", str(paths["myocardium"]), "--out-dir", str(out),
            "--progress", "none"]
    assert main([*base, f"--insertion-points={small_study['points']}"]) == 0
    assert (out / "strain_aha_segments.nrrd").is_file() and (out / "strain_bullseye.png").is_file()
    other = (out / "aha_segments.nrrd").write_bytes(b"written by cmrsynth aha")  # another command's output
    capsys.readouterr()
    assert main([*base, "--frame-interval-ms", "33"]) == 0  # no RV mask or points: no segments this time
    document = json.loads(capsys.readouterr().out)["summary"]
    assert not (out / "strain_aha_segments.nrrd").exists() and not (out / "strain_bullseye.png").exists()
    assert sum("of an earlier run" in note for note in document["notes"]) == 2
    assert (out / "aha_segments.nrrd").read_bytes() == b"written by cmrsynth aha" and other
    assert any("frame interval given (33 ms) was not used" in note for note in document["notes"])  # the reader's


def test_cli_without_masks_takes_them_and_ed_es_from_the_cine_segmenter(tmp_path, monkeypatch, capsys):
    """The cine starts two frames after ED; a stand-in segmenter returns the true labels of every frame."""
    ring = ring_cine(size=56, frames=8, inner=14.0, outer=21.0, inner_es=9.0, seed=6)
    cine = ring["cine"].with_array(np.roll(ring["cine"].array, -2, axis=0))
    labels = cine.with_array(np.roll(ring["labels"], -2, axis=0))
    calls = []

    def segment_cine(given, frames=None, *, device="auto", checkpoint=None, progress=None):
        calls.append((given.array.shape, frames, device))
        return labels

    module = types.ModuleType(SEGMENTER)
    module.segment_cine = segment_cine
    monkeypatch.setitem(sys.modules, SEGMENTER, module)
    out = tmp_path / "strain"
    code = main(["strain", "--cine", str(write_cine(cine, tmp_path / "cine.nrrd")), "--out-dir", str(out),
                 "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    document = json.loads((out / "strain.json").read_text())
    assert calls == [((8, 1, 56, 56), None, "auto")]
    assert (document["ed_frame"], document["es_frame"]) == (6, 2)
    assert document["ed_es_source"]["ed"].startswith("LV blood-pool volume curve")
    assert np.argmax(document["lv_blood_volume_ml"]) == 6
    assert document["global_peak_circumferential_strain"] < -0.1 and document["global_peak_circumferential_frame"] == 2
    assert sum(not row["missing"] for row in document["segments"]) == 6 and (out / "strain_bullseye.png").is_file()


@pytest.mark.parametrize("case", ["3D image as cine", "one frame", "mask off the grid", "ED out of range",
                                  "no mask and no segmenter"])
def test_cli_bad_input_writes_nothing(case, small_study, tmp_path, monkeypatch, capsys):
    paths, out = small_study["paths"], tmp_path / "out"
    argv = {"--cine": paths["cine"], "--myocardium": paths["myocardium"], "--rv": paths["rv"]}
    extra: list[str] = []
    expected = {"3D image as cine": "3D", "one frame": "frame", "mask off the grid": "does not overlap",
                "ED out of range": "ED frame 8", "no mask and no segmenter": "no cine segmenter"}[case]
    if case == "3D image as cine":
        argv["--cine"] = paths["still"]
    elif case == "one frame":
        argv["--cine"] = paths["single"]
    elif case == "mask off the grid":
        argv["--myocardium"] = paths["shifted"]
    elif case == "ED out of range":
        extra = ["--ed", "8"]
    else:
        monkeypatch.setitem(sys.modules, SEGMENTER, None)  # as if the module were not installed
        del argv["--myocardium"], argv["--rv"]
    command = ["strain", *[str(v) for pair in argv.items() for v in pair], *extra, "--out-dir", str(out),
               "--progress", "none"]
    code = main(command)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and expected in err, err
    assert not out.exists()


def test_a_label_map_given_as_a_mask_and_ed_equal_to_es_are_refused():
    """A label map (blood 1, myocardium 2) where the myocardium mask is wanted would be tracked whole; ED = ES has
    no deformation to measure. Both are refused with what to give instead (found by a new-user trial)."""
    ring = ring_cine(frames=6, seed=4)
    labels = ring["myocardium"].astype(np.uint8) * 2 + ring["blood"].astype(np.uint8)
    with pytest.raises(InputError, match=r"several labels \(1, 2\).*binary mask"):
        myocardial_strain(ring["cine"], labels)
    with pytest.raises(InputError, match="same frame"):
        myocardial_strain(ring["cine"], ring["myocardium"], ed_frame=2, es_frame=2)

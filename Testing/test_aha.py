"""AHA 16-segment model, per-segment statistics, tables, bullseye and display conventions.

Ground truth comes from outside the code under test: synthetic rings built from anatomical directions in LPS
(anterior, and the septum towards the patient's right), and phantom subjects with scar in a known territory."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from cmcrameri import cm as crameri
from scipy.ndimage import binary_dilation

from CMRSynthesisLib import display, phantom
from CMRSynthesisLib.analysis.aha import (
    AHA_SEGMENTS,
    aha_segments,
    level_of_segment,
    segment_statistics,
    write_segment_table,
)
from CMRSynthesisLib.analysis.bullseye import bullseye_figure, segment_layout, write_bullseye_png
from CMRSynthesisLib.errors import GeometryError, InputError, OutputError
from CMRSynthesisLib.volume import Volume

APEX = np.array([0.55, -0.45, -0.70]) / np.linalg.norm([0.55, -0.45, -0.70])  # base -> apex, LPS
_UP = np.array([0.0, -1.0, 0.0])  # anterior in LPS
ANTERIOR = (_UP - (_UP @ APEX) * APEX) / np.linalg.norm(_UP - (_UP @ APEX) * APEX)
SEPTAL = np.cross(APEX, ANTERIOR)  # a right-handed quarter turn about the long axis from anterior
TERRITORIES = {"LAD": {1, 2, 7, 8, 13, 14}, "RCA": {3, 4, 9, 10, 15}, "LCx": {5, 6, 11, 12, 16}}


def ring_stack(*, flip_x: bool = False, base_first: bool = False, rv_arc_deg: tuple[float, float] = (30.0, 150.0),
               slices: int = 9) -> dict:
    """A cylindrical LV (cavity r < 10 mm, wall 10-16 mm) with an RV crescent over `rv_arc_deg` on an oblique grid.

    psi: the anatomical angle of each voxel in degrees, 0 anterior, 90 septal, 180 inferior, 270 lateral;
    depth: mm along the long axis towards the apex from the stack's centre. flip_x makes the grid left-handed,
    base_first puts the base at slice 0; neither changes the anatomy in space."""
    z_axis = APEX if base_first else -APEX
    y_axis = -ANTERIOR
    x_axis = np.cross(y_axis, z_axis) * (-1.0 if flip_x else 1.0)
    direction = np.column_stack([x_axis, y_axis, z_axis])
    shape, spacing = (slices, 40, 40), np.array([2.0, 2.0, 8.0])
    centre = np.array([20.0, 5.0, -30.0])
    origin = centre - direction @ (spacing * (np.array(shape[::-1]) - 1) / 2)
    reference = Volume(np.zeros(shape, np.uint8), tuple(spacing), tuple(origin), tuple(direction.ravel()))
    z, y, x = np.indices(shape)
    offset = np.einsum("ij,j...->...i", direction * spacing, np.stack([x, y, z]).astype(float)) + origin - centre
    depth = offset @ APEX
    in_plane = offset - depth[..., None] * APEX
    radius = np.linalg.norm(in_plane, axis=-1)
    psi = np.degrees(np.arctan2(in_plane @ SEPTAL, in_plane @ ANTERIOR)) % 360.0
    low, high = rv_arc_deg
    myocardium = (radius >= 10.0) & (radius < 16.0)
    return {"myocardium": reference.with_array(myocardium.astype(np.uint8)), "blood": radius < 10.0,
            "rv": (radius >= 16.0) & (radius < 24.0) & (psi >= low) & (psi <= high), "psi": psi, "depth": depth,
            "centre": centre, "points": [centre + 16.0 * (math.cos(math.radians(a)) * ANTERIOR + math.sin(math.radians(a)) * SEPTAL)
                       for a in rv_arc_deg]}


def expected_segments(stack: dict, *, basal_start_deg: float = -30.0) -> np.ndarray:
    """AHA labels from anatomy: segment 1 centred anterior, 2 anteroseptal, ... counting towards the septum;
    apical 13 anterior, 14 septal, 15 inferior, 16 lateral; base at the smallest depth (9 slices: thirds)."""
    psi, depth, myocardium = stack["psi"], stack["depth"], stack["myocardium"].array > 0
    basal = 1 + np.floor(((psi - basal_start_deg) % 360.0) / 60.0).astype(int)
    apical = 13 + np.floor(((psi + 45.0) % 360.0) / 90.0).astype(int)
    labels = np.where(depth < -10.0, basal, np.where(depth < 10.0, basal + 6, apical))
    return np.where(myocardium, labels, 0)


def agreement(labels: np.ndarray, expected: np.ndarray) -> float:
    inside = expected > 0
    return float((labels[inside] == expected[inside]).mean())


def phantom_study(subject_id: int) -> dict:
    subject = phantom.make_subject(subject_id)
    labels = phantom.render_labels(subject)
    masks = phantom.tissue_masks(labels)
    return {"subject": subject, "labels": labels, "masks": masks,
            "myocardium": labels.with_array((masks["myocardium"] | masks["scar"]).astype(np.uint8))}


def flipped(volume: Volume, axis: str) -> Volume:
    """The same voxels in space with the x or z index reversed (the direction column negated, origin moved)."""
    column, array_axis = {"x": (0, 2), "z": (2, 0)}[axis]
    matrix = np.asarray(volume.direction).reshape(3, 3).copy()
    count = volume.array.shape[array_axis]
    origin = np.asarray(volume.origin) + matrix[:, column] * volume.spacing[column] * (count - 1)
    matrix[:, column] *= -1.0
    return Volume(np.flip(volume.array, array_axis).copy(), volume.spacing, tuple(origin), tuple(matrix.ravel()))


@pytest.fixture(scope="module")
def scar_studies() -> list[dict]:
    return [study for study in map(phantom_study, range(24)) if study["subject"].scar is not None]


# --- orientation: handedness, anchor, base/apex -------------------------------------------------------------


def test_synthetic_frame_puts_the_septum_on_the_patients_right():
    # the test's own ground truth: turning right-handed about base->apex from anterior reaches the right side
    assert SEPTAL[0] < -0.5 and APEX @ np.array([1.0, -1.0, -1.0]) > 0


@pytest.mark.parametrize("flip_x", [False, True])
@pytest.mark.parametrize("base_first", [False, True])
def test_segments_follow_the_anatomy_on_any_grid(flip_x, base_first):
    # Fails if the circumferential direction is mirrored (2<->6 ...), the anchor is a segment off, base and apex
    # are swapped, or image axes are used instead of the physical geometry (left-handed grid, reversed slices).
    stack = ring_stack(flip_x=flip_x, base_first=base_first)
    result = aha_segments(stack["myocardium"], blood_pool=stack["blood"], rv=stack["rv"])
    expected = expected_segments(stack)
    assert agreement(result.labels.array, expected) > 0.97
    assert result.missing == []
    basal_slice = 0 if base_first else 8
    assert result.levels[basal_slice] == "basal" and result.levels[8 - basal_slice] == "apical"
    assert np.dot(result.long_axis_lps, APEX) > 0.999


def test_each_segment_sits_at_its_anatomical_direction():
    stack = ring_stack()
    labels = aha_segments(stack["myocardium"], blood_pool=stack["blood"], rv=stack["rv"]).labels.array
    mid = stack["myocardium"].array[4] > 0
    psi = stack["psi"][4]
    for segment, direction in ((7, 0.0), (8, 60.0), (9, 120.0), (10, 180.0), (11, 240.0), (12, 300.0)):
        near = mid & (np.abs((psi - direction + 180.0) % 360.0 - 180.0) < 15.0)
        assert np.all(labels[4][near] == segment), (segment, np.unique(labels[4][near]))
    apical = stack["myocardium"].array[0] > 0
    for segment, direction in ((13, 0.0), (14, 90.0), (15, 180.0), (16, 270.0)):
        near = apical & (np.abs((stack["psi"][0] - direction + 180.0) % 360.0 - 180.0) < 20.0)
        assert np.all(labels[0][near] == segment)


def test_slices_without_rv_contact_borrow_their_levels_insertion_points():
    stack = ring_stack()
    rv = stack["rv"].copy()
    rv[:3] = False  # apical slices: no RV (as near the real apex); they take the stack's insertion points
    rv[4:6] = False  # two of three mid slices: they take the third's
    result = aha_segments(stack["myocardium"], blood_pool=stack["blood"], rv=rv)
    assert agreement(result.labels.array, expected_segments(stack)) > 0.97
    with pytest.raises(InputError, match="does not touch"):
        aha_segments(stack["myocardium"], rv=np.zeros_like(rv))


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_user_points_give_the_anatomical_segments_in_either_order(order):
    stack = ring_stack(flip_x=True)
    points = [stack["points"][i] for i in order]
    result = aha_segments(stack["myocardium"], insertion_points_lps=points)
    assert agreement(result.labels.array, expected_segments(stack)) > 0.97
    anterior, inferior = result.insertion_deg[4]
    assert (inferior - anterior) % 360.0 == pytest.approx(120.0, abs=1.0)


def test_anterior_anchor_starts_segment_2_at_the_anterior_insertion():
    # insertion points 132 degrees apart: "septum" keeps 60-degree sectors centred on the septum, "anterior" starts
    # segment 2 at the anterior insertion point (24 degrees); the two must differ where the expectations differ
    stack = ring_stack(rv_arc_deg=(24.0, 156.0))
    centred = aha_segments(stack["myocardium"], blood_pool=stack["blood"], insertion_points_lps=stack["points"])
    from_anterior = aha_segments(stack["myocardium"], blood_pool=stack["blood"],
                                 insertion_points_lps=stack["points"], anchor="anterior")
    assert agreement(centred.labels.array, expected_segments(stack)) > 0.97
    shifted = expected_segments(stack, basal_start_deg=-36.0)
    assert agreement(from_anterior.labels.array, shifted) > 0.97
    assert not np.array_equal(centred.labels.array, from_anterior.labels.array)
    apical = stack["depth"] > 10.0
    assert np.array_equal(centred.labels.array[apical], from_anterior.labels.array[apical])


def test_explicit_base_overrides_the_anatomy():
    stack = ring_stack()
    result = aha_segments(stack["myocardium"], blood_pool=stack["blood"], rv=stack["rv"], base="first")
    assert result.levels[0] == "basal" and result.levels[8] == "apical"
    assert set(np.unique(result.labels.array[0])) - {0} <= set(range(1, 7))


def test_thirds_give_extra_slices_to_mid_then_basal():
    for slices, counts in ((9, (3, 3, 3)), (10, (3, 4, 3)), (11, (4, 4, 3))):
        stack = ring_stack(slices=slices)
        levels = aha_segments(stack["myocardium"], rv=stack["rv"]).levels
        assert tuple(list(levels.values()).count(name) for name in ("basal", "mid", "apical")) == counts


def test_phantom_left_handed_and_reversed_grids_give_the_same_segments_in_space():
    study = phantom_study(3)
    masks, myocardium = study["masks"], study["myocardium"]
    reference = aha_segments(myocardium, blood_pool=masks["blood"], rv=masks["rv"]).labels.array
    for axis, array_axis in (("x", 2), ("z", 0)):
        def moved(mask: np.ndarray, axis: str = axis) -> np.ndarray:
            return flipped(myocardium.with_array(mask.astype(np.uint8)), axis).array

        labels = aha_segments(flipped(myocardium, axis), blood_pool=moved(masks["blood"]),
                              rv=moved(masks["rv"])).labels.array
        assert np.mean(labels[labels > 0] == np.flip(reference, array_axis)[labels > 0]) > 0.999


# --- phantom anatomy -------------------------------------------------------------------------------------------


def test_phantom_scar_lands_in_its_coronary_territory(scar_studies):
    # Pooled over subjects, a mirrored direction scores about 0.2 and a one-segment anchor shift 0.3-0.6. The
    # majority check leaves out the apex, where four segments meet the phantom's broad territories (an LCx scar
    # centred inferolaterally lies in the apical inferior segment, as the AHA layout says).
    inside, total = 0, 0
    for study in scar_studies:
        masks = study["masks"]
        labels = aha_segments(study["myocardium"], blood_pool=masks["blood"], rv=masks["rv"]).labels.array
        scar = labels[masks["scar"]].astype(int)
        territory = TERRITORIES[study["subject"].scar.territory]
        counts = np.bincount(scar, minlength=17)
        # basal and mid segments decide; a scar only in apical slices is judged on the apical segments
        majority = int(np.argmax(counts[:13])) if counts[1:13].any() else 13 + int(np.argmax(counts[13:17]))
        assert majority in territory, (study["subject"].subject_id, study["subject"].scar, np.bincount(scar))
        inside += int(np.isin(scar, list(territory)).sum())
        total += scar.size
    assert len(scar_studies) >= 10
    assert inside / total > 0.9


def insertion_points_from_labels(labels: Volume, z: int) -> list[np.ndarray]:
    """The two ends of the RV's contact with the LV myocardium in slice z, found on screen as a user would click
    them (phantom screen angles: septum near 180 degrees, so the arc does not wrap), in LPS mm."""
    slice_labels = labels.array[z]
    myocardium = np.isin(slice_labels, (phantom.LABELS["lv_myocardium"], phantom.LABELS["scar"]))
    rv = np.isin(slice_labels, (phantom.LABELS["rv_blood"], phantom.LABELS["rv_wall"]))
    rows, cols = np.nonzero(myocardium & binary_dilation(rv))
    blood_rows, blood_cols = np.nonzero(slice_labels == phantom.LABELS["lv_blood"])
    theta = np.degrees(np.arctan2(-(rows - blood_rows.mean()), cols - blood_cols.mean())) % 360.0
    ends = (int(np.argmin(theta)), int(np.argmax(theta)))
    matrix = labels.index_to_physical()
    return [(matrix @ np.array([cols[i], rows[i], z, 1.0]))[:3] for i in ends]


def test_rv_mask_and_user_points_agree_on_the_phantom():
    for subject_id in (0, 6, 11):
        study = phantom_study(subject_id)
        masks = study["masks"]
        from_mask = aha_segments(study["myocardium"], blood_pool=masks["blood"], rv=masks["rv"])
        mid_slice = [z for z, level in from_mask.levels.items() if level == "mid"][1]
        points = insertion_points_from_labels(study["labels"], mid_slice)
        from_points = aha_segments(study["myocardium"], blood_pool=masks["blood"], insertion_points_lps=points)
        inside = from_mask.labels.array > 0
        same = from_mask.labels.array[inside] == from_points.labels.array[inside]
        assert same.mean() > 0.85, (subject_id, same.mean())


# --- missing segments and bad input ----------------------------------------------------------------------------


def test_too_few_slices_is_an_error_unless_missing_segments_are_allowed():
    stack = ring_stack()
    two_slices = stack["myocardium"].array.copy()
    two_slices[:7] = 0
    myocardium = stack["myocardium"].with_array(two_slices)
    with pytest.raises(InputError, match="2 slice"):
        aha_segments(myocardium, rv=stack["rv"])
    result = aha_segments(myocardium, rv=stack["rv"], allow_missing=True)
    assert result.missing == [13, 14, 15, 16]
    assert sorted(result.levels.values()) == ["basal", "mid"]
    rows = segment_statistics(result, myocardium.with_array(np.full(two_slices.shape, 5.0)))
    assert [row["segment"] for row in rows if row["missing"]] == [13, 14, 15, 16]
    assert all(row["mean"] is None and row["n"] == 0 for row in rows[12:])
    assert rows[0]["mean"] == 5.0 and rows[0]["n"] > 0


def test_open_ring_reports_the_segments_without_myocardium():
    stack = ring_stack()
    # the lateral wall (segments 5, 6, 11, 12, 16) left out with 5-degree margins; no blood pool to centre on
    open_ring = stack["myocardium"].array * ~((stack["psi"] > 205.0) & (stack["psi"] < 335.0))
    myocardium = stack["myocardium"].with_array(open_ring.astype(np.uint8))
    with pytest.raises(InputError, match="5, 6, 11, 12, 16 contain no myocardium"):
        aha_segments(myocardium, rv=stack["rv"])
    result = aha_segments(myocardium, rv=stack["rv"], allow_missing=True)
    assert result.missing == [5, 6, 11, 12, 16]
    assert agreement(result.labels.array, expected_segments(stack) * (open_ring > 0)) > 0.97


def test_bad_inputs_are_refused_with_clear_errors():
    stack = ring_stack()
    myocardium = stack["myocardium"]
    with pytest.raises(InputError, match="RV mask.*insertion points"):
        aha_segments(myocardium)
    with pytest.raises(InputError, match="not both"):
        aha_segments(myocardium, rv=stack["rv"], insertion_points_lps=stack["points"])
    with pytest.raises(InputError, match="empty"):
        aha_segments(myocardium.with_array(np.zeros_like(myocardium.array)), rv=stack["rv"])
    far_away = np.zeros_like(stack["rv"])
    far_away[:, :3, :3] = True
    with pytest.raises(InputError, match="does not touch"):
        aha_segments(myocardium, rv=far_away)
    with pytest.raises(GeometryError, match="shape"):
        aha_segments(myocardium, rv=stack["rv"][:, :-1])
    with pytest.raises(InputError, match="base"):
        aha_segments(myocardium, rv=stack["rv"], base="top")
    opposite = [stack["points"][0], 2 * stack["centre"] - stack["points"][0]]
    with pytest.raises(InputError, match="opposite"):
        aha_segments(myocardium, insertion_points_lps=opposite)
    twice = [stack["points"][0], np.asarray(stack["points"][0]) + 0.5]  # the same point twice, or nearly
    with pytest.raises(InputError, match=r"are \d degrees apart about the LV centre"):
        aha_segments(myocardium, insertion_points_lps=twice)
    sideways = Volume(myocardium.array, myocardium.spacing, myocardium.origin,
                   tuple(np.column_stack([[0, 0, 1], [0.5**0.5, -(0.5**0.5), 0], [0.5**0.5, 0.5**0.5, 0]]).ravel()))
    with pytest.raises(InputError, match="base='first' or 'last'"):
        aha_segments(sideways, rv=stack["rv"])


def test_statistics_refuse_other_grids_and_maps_that_miss_the_mask():
    stack = ring_stack()
    result = aha_segments(stack["myocardium"], rv=stack["rv"])
    values = np.where(stack["myocardium"].array > 0, 0.0, 1000.0)
    with pytest.raises(InputError, match="do not overlap"):
        segment_statistics(result, stack["myocardium"].with_array(values))
    with pytest.raises(InputError, match="do not overlap"):
        segment_statistics(result, stack["myocardium"].with_array(np.where(values > 0, values, np.nan)))
    shifted = Volume(values, stack["myocardium"].spacing, (0.0, 0.0, 0.0), stack["myocardium"].direction)
    with pytest.raises(GeometryError, match="origin"):
        segment_statistics(result, shifted)


# --- statistics and tables -------------------------------------------------------------------------------------


def test_statistics_match_numpy_per_segment():
    study = phantom_study(5)
    masks = study["masks"]
    result = aha_segments(study["myocardium"], blood_pool=masks["blood"], rv=masks["rv"])
    labels = result.labels.array
    rng = np.random.default_rng(7)
    values = labels * 100.0 + rng.normal(0.0, 20.0, labels.shape)
    values[rng.random(labels.shape) < 0.05] = np.nan
    keep = rng.random(labels.shape) < 0.8
    rows = segment_statistics(result, study["labels"].with_array(values.astype(np.float32)), mask=keep)
    assert [row["segment"] for row in rows] == list(range(1, 17))
    assert [row["name"] for row in rows] == list(AHA_SEGMENTS)
    for row in rows:
        selected = values.astype(np.float32)[(labels == row["segment"]) & keep & np.isfinite(values)].astype(float)
        assert row["n"] == selected.size > 50
        assert row["mean"] == pytest.approx(selected.mean()) and row["mean"] == pytest.approx(100 * row["segment"],
                                                                                               abs=5.0)
        assert row["sd"] == pytest.approx(selected.std()) and row["median"] == pytest.approx(np.median(selected))
        assert row["level"] == level_of_segment(row["segment"]) and row["missing"] is False


def test_tables_round_trip(tmp_path):
    stack = ring_stack()
    result = aha_segments(stack["myocardium"], rv=stack["rv"], allow_missing=True)
    rows = segment_statistics(result, stack["myocardium"].with_array(result.labels.array * 10.0 + 0.25))
    rows[3] = {**rows[3], "mean": None, "sd": None, "median": None, "n": 0, "missing": True}
    write_segment_table(rows, tmp_path / "t.csv", tmp_path / "t.json", quantity="t1_native", units="ms")
    document = json.loads((tmp_path / "t.json").read_text())
    assert document["quantity"] == "t1_native" and document["units"] == "ms" and document["segments"] == rows
    with open(tmp_path / "t.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert [int(line["segment"]) for line in table] == list(range(1, 17))
    assert table[0]["name"] == "basal anterior" and table[0]["units"] == "ms"
    assert float(table[0]["mean"]) == rows[0]["mean"] == 10.25
    assert table[3]["mean"] == "" and table[3]["n"] == "0"
    with pytest.raises(OutputError, match="input"):
        write_segment_table(rows, tmp_path / "t.csv", quantity="t1_native", units="ms",
                            protected=[tmp_path / "t.csv"])


# --- bullseye and display -------------------------------------------------------------------------------------


def test_bullseye_layout_is_the_standard_view_from_the_apex():
    def centre(segment: int) -> float:
        _, first, last = segment_layout(segment)
        return (first + last) / 2 % 360.0

    assert centre(1) == 90.0 and centre(7) == 90.0 and centre(13) == 90.0  # anterior at the top
    assert 90.0 < centre(2) < 180.0 < centre(3) < 270.0 and centre(14) == 180.0  # septum on the left
    assert centre(4) == 270.0 and centre(16) == 0.0 and centre(5) > 270.0 and centre(6) < 90.0


def test_bullseye_png_shows_values_and_units(tmp_path):
    rows = [{"segment": s, "mean": 950.0 + 10 * s, "missing": False} for s in range(1, 17)]
    rows[15] = {"segment": 16, "mean": None, "missing": True}
    texts = [text.get_text() for text in bullseye_figure(rows, quantity="t1_native").findobj(
        lambda artist: hasattr(artist, "get_text"))]
    assert {"960", "1100", "n/a", "16", "anterior", "septal"} <= set(texts)
    assert any("ms" in text for text in texts)
    path = write_bullseye_png(rows, tmp_path / "bullseye.png", quantity="t1_native", title="test")
    data = path.read_bytes()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 600 < width < 1200 and 500 < height < 1000 and len(data) > 20_000
    with pytest.raises(InputError, match="1-16"):
        bullseye_figure(rows[:15], quantity="ecv")


def test_display_conventions():
    assert display.window("t1_native") == (0.0, 2000.0) and display.window("t1_post") == (0.0, 1000.0)
    assert display.window("t1") == (0.0, 2000.0) and display.window("ecv") == (0.0, 100.0)
    assert display.display_for("t1_post").units == "ms" and display.display_for("ecv").units == "%"
    assert display.colormap("t1_native") is crameri.lipari and display.colormap("t1_post") is crameri.lipari
    table = display.colour_table("t1_native")
    assert table.shape == (256, 4) and np.allclose(table[0], crameri.lipari(0.0))
    assert np.allclose(table[-1], crameri.lipari(1.0)) and np.all(table[:, 3] == 1.0)
    values = np.r_[np.linspace(-0.2, 0.2, 99), np.nan]
    low, high = display.window("strain", values)
    assert -0.2 < low < -0.19 and 0.19 < high < 0.2 and display.display_for("strain", "1").units == "1"
    assert display.format_value("ecv", 27.345) == "27.3" and display.format_value("t1_post", 456.6) == "457"


def test_scar_extent_per_segment_is_graded_and_counts_only_where_looked():
    """A transmural scar over half of the anterior segments' arc of the mid slices: those segments hold about 50 %
    extent (grade 26-50 %), the others 0 (grade 0); looking only at one mid slice leaves the basal and apical segments
    missing and keeps the mid extents (the segments stay those of the whole stack)."""
    from CMRSynthesisLib.analysis.transmurality import GRADE_LABELS, segment_scar_extent

    stack = ring_stack()
    segmentation = aha_segments(stack["myocardium"], blood_pool=stack["blood"], rv=stack["rv"])
    labels = segmentation.labels.array
    mid = sorted(z for z, level in segmentation.levels.items() if level == "mid")
    scar = np.zeros(labels.shape, bool)
    scar[mid] = labels[mid] == 7  # mid anterior, whole segment
    scar &= (stack["psi"] > 0) & (stack["psi"] < 180)  # half of it: the part towards the septum
    rows = {row["segment"]: row for row in segment_scar_extent(segmentation, scar)}
    assert 35.0 < rows[7]["mean"] < 65.0 and rows[7]["grade_label"] in GRADE_LABELS[2:4]
    assert all(rows[segment]["mean"] == 0.0 and rows[segment]["grade"] == 0 for segment in rows if segment != 7)
    within = np.zeros(labels.shape, bool)
    within[mid[0]] = True
    looked = {row["segment"]: row for row in segment_scar_extent(segmentation, scar, within=within)}
    assert all(looked[segment]["missing"] for segment in list(range(1, 7)) + list(range(13, 17)))
    assert looked[7]["mean"] == pytest.approx(100.0 * scar[mid[0]][labels[mid[0]] == 7].mean())

"""The AHA 16-segment model of the left ventricle (Cerqueira et al., Circulation 2002) on a short-axis stack.

Conventions (all geometry in physical LPS millimetres, so oblique and left-handed voxel grids work):
- Long axis: the unit vector u from base to apex. By default the slice normal's sign is chosen so that u points to
  the patient's left, anterior and inferior (u . (1, -1, -1) > 0 in LPS); `base="first"|"last"` overrides it.
- Levels: the slices that contain myocardium, ordered base -> apex, are split into basal, mid and apical thirds as
  equal in size as possible; a remainder of one slice goes to mid, of two to mid and basal.
- Angles: about each slice's centre (the LV blood-pool centroid, else a circle fitted to the myocardium), in
  the plane normal to u, increasing with a right-handed rotation about u. Seen from the apex (the bullseye view:
  anterior up, septum left) that is the order anterior -> septum -> inferior -> lateral, i.e. segments 1 -> 6.
- Anchor: the anterior (A) and inferior (I) RV insertion angles; the septum is the positive arc from A to I and
  the mid-septal direction m bisects it. Basal and mid levels have six 60-degree sectors. With
  `anchor="septum"` (default) the septal pair 2+3 (8+9) spans m +- 60 degrees, so both insertion points weigh
  equally and the bias of an RV contact tolerance cancels; with `anchor="anterior"` segment 2 (8) starts at A, as
  some scanner software does. The apical level has four 90-degree sectors with segment 14 centred on m.
- Insertion points from an RV mask: per slice, the myocardium within `rv_contact_mm` of the RV forms an arc; its
  two ends (the complement of the largest angular gap) are A and I. A slice without RV contact takes the circular
  mean of its level's slices (else of the whole stack). From two user points: each is projected on every slice's
  plane; the anterior one is the one from which the positive arc to the other is shorter than 180 degrees.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from ..errors import InputError
from ..io.writing import atomic_write_bytes, check_output_paths
from ..volume import Volume

AHA_SEGMENTS: tuple[str, ...] = (
    "basal anterior", "basal anteroseptal", "basal inferoseptal", "basal inferior", "basal inferolateral",
    "basal anterolateral",
    "mid anterior", "mid anteroseptal", "mid inferoseptal", "mid inferior", "mid inferolateral", "mid anterolateral",
    "apical anterior", "apical septal", "apical inferior", "apical lateral",
)
LEVELS = ("basal", "mid", "apical")
ANCHORS = ("septum", "anterior")
MIN_INSERTION_ARC_DEG = 20.0  # insertion points closer than this about the LV centre cannot bound the septum
TABLE_COLUMNS = ("segment", "name", "level", "quantity", "units", "mean", "sd", "median", "n")
_APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / math.sqrt(3.0)  # left, anterior, inferior
_SECTORS = {  # segments in the positive order, from the sector start (see aha_segments)
    "basal": (2, 3, 4, 5, 6, 1),
    "mid": (8, 9, 10, 11, 12, 7),
    "apical": (14, 15, 16, 13),
}


def level_of_segment(segment: int) -> str:
    """"basal" (1-6), "mid" (7-12) or "apical" (13-16)."""
    if not 1 <= segment <= 16:
        raise InputError(f"AHA segments are numbered 1-16; got {segment}")
    return LEVELS[0] if segment <= 6 else LEVELS[1] if segment <= 12 else LEVELS[2]


@dataclasses.dataclass
class AhaSegmentation:
    """AHA segments of one short-axis stack.

    labels: uint8 Volume on the myocardium mask's grid, 0 outside the myocardium, 1-16 inside.
    levels: slice index -> "basal" / "mid" / "apical", for the slices that contain myocardium, base first.
    missing: segment numbers without any voxel (empty unless `allow_missing` was given).
    long_axis_lps: unit vector u from base to apex. in_plane_axes_lps: (e1, e2), unit vectors with e1 x e2 = u;
    angles are atan2(d . e2, d . e1) for d from the slice centre. centres_lps: slice index -> centre (mm).
    insertion_deg: slice index -> (anterior, inferior) RV insertion angles in degrees, in [0, 360).
    """

    labels: Volume
    levels: dict[int, str]
    missing: list[int]
    long_axis_lps: tuple[float, float, float]
    in_plane_axes_lps: tuple[tuple[float, float, float], tuple[float, float, float]]
    centres_lps: dict[int, tuple[float, float, float]]
    insertion_deg: dict[int, tuple[float, float]]


def aha_segments(myocardium: Volume, *, blood_pool: np.ndarray | Volume | None = None,
                 rv: np.ndarray | Volume | None = None,
                 insertion_points_lps: Sequence[Sequence[float]] | None = None, base: str = "auto",
                 anchor: str = "septum", allow_missing: bool = False, rv_contact_mm: float = 3.0) -> AhaSegmentation:
    """Label the LV myocardium with the 16 AHA segments.

    myocardium: 3D mask Volume (z, y, x), non-zero in the LV myocardium (scar included). blood_pool, rv: optional
    masks (z, y, x) on the same grid: the LV cavity (slice centres) and the RV (cavity and/or wall) for the anchor.
    insertion_points_lps: instead of `rv`, the two RV insertion points as (2, 3) LPS millimetres, in any order.
    base: "auto" (from the anatomy, see the module docstring), "first" or "last" (the slice index end that is the
    base). anchor: "septum" or "anterior" (sector placement, see the module docstring). allow_missing: return
    segments without voxels (and levels without slices) in `missing` instead of raising InputError.
    rv_contact_mm: how close (mm) myocardium must be to the RV mask to count as touching it.
    """
    if myocardium.array.ndim != 3:
        raise InputError(f"the myocardium mask must be 3D (z, y, x); got shape {myocardium.array.shape}")
    if anchor not in ANCHORS:
        raise InputError(f"unknown anchor {anchor!r}; use one of {ANCHORS}")
    if not rv_contact_mm > 0:
        raise InputError(f"the RV contact distance must be positive (mm); got {rv_contact_mm}")
    if (rv is None) == (insertion_points_lps is None):
        raise InputError("the AHA segments need the RV insertion points to find the septum: give either an RV mask "
                         "(rv=...) or the two insertion points in LPS millimetres (insertion_points_lps=...), "
                         "not both")
    mask = myocardium.mask_on_grid(myocardium, "the myocardium mask", "itself", allow_empty=True)
    blood = (myocardium.mask_on_grid(blood_pool, "the blood-pool mask", "the myocardium mask", allow_empty=True)
             if blood_pool is not None else None)
    frame = myocardium.index_to_physical()
    long_axis = _long_axis(frame, base)
    e1 = frame[:3, 0] - (frame[:3, 0] @ long_axis) * long_axis
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(long_axis, e1)

    slices = [z for z in range(mask.shape[0]) if mask[z].any()]
    if not slices:
        raise InputError(f"{myocardium.named('the myocardium mask')} is empty: no slice contains myocardium")
    slices.sort(key=lambda z: float(frame[:3, 2] @ long_axis) * z)  # base first
    if len(slices) < 3 and not allow_missing:
        raise InputError(f"the myocardium mask covers {len(slices)} slice(s); the AHA model needs at least 3 "
                         "(basal, mid and apical thirds). Check the mask, or allow missing segments")
    levels = _split_levels(slices)
    centres = {z: _slice_centre(frame, mask[z], None if blood is None else blood[z], z) for z in slices}

    def angles(z: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Angles (rad) of pixels (rows, cols) of slice z about its centre."""
        offsets = np.outer(frame[:3, 0], cols) + np.outer(frame[:3, 1], rows)
        offsets += (frame[:3, 3] + frame[:3, 2] * z - centres[z])[:, None]
        return np.arctan2(e2 @ offsets, e1 @ offsets)

    if rv is not None:
        rv_mask = myocardium.mask_on_grid(rv, "the RV mask", "the myocardium mask", allow_empty=True)
        spacing = (myocardium.spacing[1], myocardium.spacing[0])
        found = {z: _rv_insertion(mask[z], rv_mask[z], spacing, rv_contact_mm, functools.partial(angles, z))
                 for z in slices}
        insertion = _fill_insertion(found, levels)
    else:
        insertion = _insertion_from_points(insertion_points_lps, centres, e1, e2)

    labels = np.zeros(mask.shape, dtype=np.uint8)
    for z in slices:
        rows, cols = np.nonzero(mask[z])
        anterior, inferior = insertion[z]
        septum = anterior + np.mod(inferior - anterior, 2 * np.pi) / 2
        sectors = _SECTORS[levels[z]]
        width = 2 * np.pi / len(sectors)
        if levels[z] == "apical":
            start = septum - width / 2
        else:
            start = septum - width if anchor == "septum" else anterior
        sector = np.floor(np.mod(angles(z, rows, cols) - start, 2 * np.pi) / width).astype(int) % len(sectors)
        labels[z, rows, cols] = np.asarray(sectors, dtype=np.uint8)[sector]

    missing = [s for s in range(1, 17) if not (labels == s).any()]
    if missing and not allow_missing:
        raise InputError(f"AHA segment(s) {', '.join(map(str, missing))} contain no myocardium (levels with slices: "
                         f"{', '.join(sorted(set(levels.values()), key=LEVELS.index))}); check that the mask "
                         "covers the LV from base to apex as a closed ring, or allow missing segments")
    return AhaSegmentation(
        labels=myocardium.with_array(labels, quantity="aha_segment", units="label"),
        levels=levels,
        missing=missing,
        long_axis_lps=tuple(float(v) for v in long_axis),
        in_plane_axes_lps=(tuple(float(v) for v in e1), tuple(float(v) for v in e2)),
        centres_lps={z: tuple(float(v) for v in centre) for z, centre in centres.items()},
        insertion_deg={z: (math.degrees(a) % 360.0, math.degrees(i) % 360.0) for z, (a, i) in insertion.items()},
    )


def segment_statistics(segmentation: AhaSegmentation, values: Volume, *,
                       mask: np.ndarray | Volume | None = None) -> list[dict]:
    """Per-segment statistics of a map on the segmentation's grid.

    values: 3D map (z, y, x); non-finite voxels are ignored. mask: optional extra selection on the same grid (for
    example the voxels whose T1 fit succeeded). Returns 16 rows, in segment order, each with "segment", "name",
    "level", "mean", "sd" (population SD over the voxels), "median", "n" (voxels) and "missing" (True with None
    values and n 0 when the segment has no usable voxel).
    """
    if values.array.ndim != 3:
        raise InputError(f"the map must be 3D (z, y, x); got shape {values.array.shape}")
    labels = segmentation.labels
    labels.require_same_geometry(values, f"{values.named('the map')} and the AHA segmentation")
    data = values.array.astype(np.float64)
    usable = np.isfinite(data)
    if mask is not None:
        usable &= labels.mask_on_grid(mask, "the statistics mask", "the AHA segmentation", allow_empty=True)
    inside = usable & (labels.array > 0)
    if not inside.any():
        raise InputError(f"{values.named('the map')} has no value inside the segmented myocardium (the mask and the "
                         "map do not overlap); check that the map and the myocardium mask belong to the same study and "
                         "slices")
    if not data[inside].any() and data[usable].any():
        raise InputError(f"{values.named('the map')} is zero everywhere in the segmented myocardium but has values "
                         "elsewhere: the mask and the map do not overlap; check that they belong to the same study and "
                         "slices")
    rows = []
    for segment, name in enumerate(AHA_SEGMENTS, start=1):
        selected = data[inside & (labels.array == segment)]
        row = {"segment": segment, "name": name, "level": level_of_segment(segment), "mean": None, "sd": None,
               "median": None, "n": int(selected.size), "missing": selected.size == 0}
        if selected.size:
            row.update(mean=float(selected.mean()), sd=float(selected.std()), median=float(np.median(selected)))
        rows.append(row)
    return rows


def write_segment_table(rows: Sequence[dict], csv_path: str | Path | None = None,
                        json_path: str | Path | None = None, *, quantity: str, units: str,
                        protected: Iterable[str | Path] = ()) -> None:
    """Write `segment_statistics` rows as CSV (columns TABLE_COLUMNS, empty cells where missing) and/or JSON
    ({"quantity", "units", "segments": rows}), each atomically; never over a `protected` input file."""
    paths = [Path(path) for path in (csv_path, json_path) if path is not None]
    if not paths:
        raise InputError("give a CSV and/or a JSON path for the segment table")
    check_output_paths(paths, protected=protected, images=False)
    if csv_path is not None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=TABLE_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "quantity": quantity, "units": units})
        atomic_write_bytes(csv_path, text.getvalue().encode("utf-8"))
    if json_path is not None:
        document = {"quantity": quantity, "units": units, "segments": [dict(row) for row in rows]}
        atomic_write_bytes(json_path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))


# --- geometry ------------------------------------------------------------------------------------------------


def _long_axis(frame: np.ndarray, base: str) -> np.ndarray:
    """Unit base -> apex vector (LPS) from the slice normal and `base`."""
    normal = frame[:3, 2] / np.linalg.norm(frame[:3, 2])
    if base == "first":
        return normal
    if base == "last":
        return -normal
    if base != "auto":
        raise InputError(f"unknown base {base!r}; use 'auto', 'first' or 'last' (the slice index end at the base)")
    alignment = float(normal @ _APEX_DIRECTION_LPS)
    if abs(alignment) < 0.2:
        raise InputError(f"the slice normal {tuple(round(v, 3) for v in normal)} (LPS) is nearly perpendicular to "
                         "the usual base-to-apex direction (left, anterior, inferior), so the base cannot be told "
                         "from the geometry; say which slice end is the base (base='first' or 'last')")
    return normal if alignment > 0 else -normal


def _split_levels(slices: list[int]) -> dict[int, str]:
    """Slices ordered base -> apex into thirds; one extra slice goes to mid, two to mid and basal."""
    third, rest = divmod(len(slices), 3)
    basal, mid = third + (rest == 2), third + (rest >= 1)
    return {z: "basal" if i < basal else "mid" if i < basal + mid else "apical" for i, z in enumerate(slices)}


def _slice_centre(frame: np.ndarray, myocardium: np.ndarray, blood: np.ndarray | None, z: int) -> np.ndarray:
    """LPS centre of slice z: the blood-pool centroid, else the centre of a circle fitted to the myocardium (the
    ring's centre, also when the ring is open, as at the outflow tract or with a gap in the mask)."""
    if blood is not None and blood.any():
        rows, cols = np.nonzero(blood)
        return frame[:3, :3] @ np.array([cols.mean(), rows.mean(), z]) + frame[:3, 3]
    rows, cols = np.nonzero(myocardium)
    points = (frame[:3, :3] @ np.stack([cols, rows, np.full(cols.size, z)]) + frame[:3, 3:4]).T
    mean = points.mean(axis=0)
    in_plane = np.linalg.qr(frame[:3, :2])[0].T  # orthonormal axes spanning the slice plane
    u, v = in_plane @ (points - mean).T
    # algebraic circle fit: u^2 + v^2 + a u + b v + c = 0, centre (-a/2, -b/2)
    design = np.column_stack([u, v, np.ones_like(u)])
    (a, b, _), _, rank, _ = np.linalg.lstsq(design, -(u**2 + v**2), rcond=None)
    return mean - 0.5 * (a * in_plane[0] + b * in_plane[1]) if rank == 3 else mean


def _rv_insertion(myocardium: np.ndarray, rv: np.ndarray, spacing: tuple[float, float], contact_mm: float,
                  angles: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[float, float] | None:
    """(anterior, inferior) insertion angles (rad) of one slice from the RV contact arc, or None without contact.
    spacing: (row, column) pixel size in mm; angles(rows, cols) gives the angles of pixels."""
    if not rv.any():
        return None
    contact = myocardium & (distance_transform_edt(~rv, sampling=spacing) <= contact_mm)
    if not contact.any():
        return None
    theta = np.sort(np.mod(angles(*np.nonzero(contact)), 2 * np.pi))
    gaps = np.diff(np.append(theta, theta[0] + 2 * np.pi))
    widest = int(np.argmax(gaps))
    return float(theta[(widest + 1) % theta.size]), float(theta[widest])


def _circular_mean(angles: list[float]) -> float:
    return float(np.angle(np.mean(np.exp(1j * np.asarray(angles)))))


def _fill_insertion(found: dict[int, tuple[float, float] | None], levels: dict[int, str]
                    ) -> dict[int, tuple[float, float]]:
    """Per-slice insertion angles; slices without RV contact take their level's (else the stack's) mean."""
    known = {z: value for z, value in found.items() if value is not None}
    if not known:
        raise InputError("the RV mask does not touch the LV myocardium in any slice, so the RV insertion points "
                         "cannot be found; check the RV mask or place the insertion points by hand")
    result = {}
    for z, value in found.items():
        if value is not None:
            result[z] = value
            continue
        pool = [value for other, value in known.items() if levels[other] == levels[z]] or list(known.values())
        result[z] = (_circular_mean([a for a, _ in pool]), _circular_mean([i for _, i in pool]))
    return result


def _insertion_from_points(points: Sequence[Sequence[float]], centres: dict[int, np.ndarray], e1: np.ndarray,
                           e2: np.ndarray) -> dict[int, tuple[float, float]]:
    """Per-slice (anterior, inferior) angles of two LPS points about each slice centre."""
    points = np.asarray(points, dtype=float)
    if points.shape != (2, 3) or not np.isfinite(points).all():
        raise InputError(f"give the RV insertion points as two finite (x, y, z) LPS points in mm; got shape "
                         f"{points.shape}")

    def angle(point: np.ndarray, centre: np.ndarray) -> float:
        offset = point - centre
        if math.hypot(offset @ e1, offset @ e2) < 1e-3:
            raise InputError(f"the insertion point {tuple(point)} lies on the LV long axis; place it on the "
                             "epicardium where the RV wall joins the LV")
        return math.atan2(offset @ e2, offset @ e1)

    middle = np.mean(list(centres.values()), axis=0)
    arc = (angle(points[1], middle) - angle(points[0], middle)) % (2 * np.pi)
    apart = math.degrees(min(arc, 2 * np.pi - arc))
    if apart < MIN_INSERTION_ARC_DEG:
        raise InputError(f"the two insertion points are {apart:.0f} degrees apart about the LV centre (the same point "
                         "twice, or nearly): the septum spans the arc between the anterior and the inferior RV "
                         f"insertion (about 90-150 degrees); place one at each, at least {MIN_INSERTION_ARC_DEG:g} "
                         "degrees apart")
    if abs(arc - np.pi) < math.radians(10.0):
        raise InputError("the two insertion points lie on opposite sides of the LV, so which one is anterior cannot "
                         "be told; place them where the RV wall joins the LV, anterior and inferior of the septum")
    anterior, inferior = (points[0], points[1]) if arc < np.pi else (points[1], points[0])
    return {z: (angle(anterior, centre), angle(inferior, centre)) for z, centre in centres.items()}

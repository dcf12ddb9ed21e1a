"""Synthetic subjects: anatomy, tissue properties, acquisition settings and splits, all drawn from the subject id.

A subject is fully determined by its integer id (`make_subject`): stack geometry, LV/RV shape and motion, surrounding
anatomy, an optional infarct in one coronary territory, a tissue table at the subject's field strength and the
acquisition settings every contrast is rendered with. Ids 0 to OOD_FIRST_ID - 1 form the training distribution
(split by id % 10); ids from OOD_FIRST_ID on form the out-of-distribution family, drawn from wider ranges (noisier,
other shading, other contrast and intensity scale), kept only to measure how shipped models generalise.

In-plane coordinates are millimetres from the image centre, x to the image right (patient left / lateral),
y down the image (inferior). Angles about the LV centre are in degrees, counter-clockwise on screen:
lateral 0, anterior 90, septal 180, inferior 270. Depth is millimetres from the LV base towards the apex.
Slice index increases from apex to base (the slice axis points from apex to base, so the frame is a rotation).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import InputError
from ..volume import Volume

LABELS: dict[str, int] = {
    "background": 0,
    "body": 1,  # skeletal muscle of the chest wall
    "fat": 2,  # subcutaneous and pericardial fat
    "lung": 3,
    "liver": 4,
    "lv_myocardium": 5,  # healthy LV myocardium
    "scar": 6,
    "lv_blood": 7,
    "rv_blood": 8,
    "rv_wall": 9,
    "aorta": 10,  # descending aorta (blood)
}

SPLITS = ("train", "validation", "test", "ood")
OOD_FIRST_ID = 1_000_000  # ids from here on are the out-of-distribution test family
TERRITORY_CENTRES_DEG = {"LAD": (90.0, 150.0), "RCA": (210.0, 270.0), "LCx": (-45.0, 45.0)}
TAPER_EXPONENT = 3.5  # LV/RV profile (1 - u^p)^(1/p): nearly cylindrical at the base, closing at the apex


@dataclasses.dataclass(frozen=True)
class Tissue:
    """MR properties of one tissue. proton_density relative to water; times in ms."""

    proton_density: float
    t1_native_ms: float
    t1_post_ms: float
    t2_ms: float


# Literature-like 1.5 T values; post-contrast T1 is 10-15 min after a gadolinium bolus.
REFERENCE_TISSUES: dict[str, Tissue] = {
    "air": Tissue(0.0, 1.0, 1.0, 1.0),
    "skeletal_muscle": Tissue(0.75, 1010.0, 600.0, 40.0),
    "fat": Tissue(0.9, 260.0, 250.0, 80.0),
    "lung": Tissue(0.15, 1200.0, 500.0, 50.0),
    "liver": Tissue(0.7, 580.0, 300.0, 45.0),
    "myocardium": Tissue(0.8, 1000.0, 450.0, 50.0),
    "scar": Tissue(0.85, 1300.0, 280.0, 60.0),
    "blood": Tissue(0.95, 1550.0, 300.0, 250.0),
}
# 3 T / 1.5 T ratios of (native T1, post-contrast T1, T2): native T1 lengthens (myocardium about 1200 ms, blood about
# 1850 ms with MOLLI at 3 T), relaxivity drops a little, T2 shortens slightly.
FIELD_3T_RATIOS: dict[str, tuple[float, float, float]] = {
    "air": (1.0, 1.0, 1.0), "skeletal_muscle": (1.4, 1.15, 0.9), "fat": (1.45, 1.4, 0.9), "lung": (1.1, 1.1, 0.9),
    "liver": (1.4, 1.15, 0.85), "myocardium": (1.2, 1.1, 0.9), "scar": (1.15, 1.1, 0.9), "blood": (1.2, 1.1, 0.9),
}
TISSUE_OF_LABEL = {
    "background": "air", "body": "skeletal_muscle", "fat": "fat", "lung": "lung", "liver": "liver",
    "lv_myocardium": "myocardium", "scar": "scar", "lv_blood": "blood", "rv_blood": "blood",
    "rv_wall": "myocardium", "aorta": "blood",
}


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Voxel grid: shape (z, y, x); spacing, origin (mm, LPS) and direction (row-major 3x3) in (x, y, z) order."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    slice_thickness_mm: float
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def volume(self, array: np.ndarray, **metadata) -> Volume:
        """A Volume on this grid (a 4D array is a time series on it)."""
        return Volume(array, self.spacing, self.origin, self.direction, dict(metadata))


@dataclasses.dataclass(frozen=True)
class LeftVentricle:
    """LV at end-diastole (a truncated ellipsoid-like shell along the long axis) and its motion."""

    base_diameter_mm: float  # cavity diameter at the base
    length_mm: float  # cavity length from the base to the apex
    wall_mm: float  # mean wall thickness
    wall_harmonics: tuple[float, float, float, float]  # (a1, phase1, a2, phase2): relative amplitudes, radians
    ellipticity: tuple[float, float]  # (relative amplitude, angle in radians) of the cavity's cos(2 theta) term
    centre_mm: tuple[float, float]  # in-plane centre at the base
    tilt: tuple[float, float]  # in-plane shift of the centre per mm of depth
    base_depth_mm: float  # depth of the most basal slice (0 = the base plane)
    ejection_fraction: float  # fraction of the cavity area ejected where the wall moves normally
    end_systole_phase: float  # fraction of the RR interval at maximal contraction
    torsion_deg: float  # apex-to-base rotation difference at end-systole


@dataclasses.dataclass(frozen=True)
class RightVentricle:
    """RV: an ellipse on the septal side whose part inside the LV is hidden, leaving a crescent on the septum."""

    semi_axes_mm: tuple[float, float]  # cavity semi-axes (across, along the septum) at the base
    centre_distance: float  # distance of the ellipse centre from the LV centre, in LV epicardial radii
    tilt_deg: float  # rotation of the RV about the LV centre (positive: towards anterior)
    wall_mm: float
    length_fraction: float  # RV length relative to the LV cavity length
    ejection_fraction: float


@dataclasses.dataclass(frozen=True)
class Thorax:
    """Surrounding anatomy in the image plane (mm): body ellipse with fat and muscle rings, liver, aorta."""

    body_centre_mm: tuple[float, float]
    body_semi_axes_mm: tuple[float, float]
    body_angle_deg: float
    subcutaneous_fat_mm: float
    chest_wall_mm: float
    liver_centre_mm: tuple[float, float]  # at the base; the liver rises towards the apex
    liver_semi_axes_mm: tuple[float, float]
    aorta_centre_mm: tuple[float, float]
    aorta_radius_mm: float
    pericardial_fat_mm: float
    pericardial_fat_angle_deg: float  # where the pericardial fat is thickest


@dataclasses.dataclass(frozen=True)
class Scar:
    """Infarct in one coronary territory, growing from the endocardium over a contiguous range of slices."""

    territory: str  # "LAD", "RCA" or "LCx"
    centre_deg: float
    extent_deg: float  # full angular extent at the middle of the slice range
    transmurality: float  # fraction of the wall from the endocardium, 0.25 (subendocardial) to 1 (transmural)
    slices: tuple[int, int]  # first and last slice index, inclusive
    twist_deg_per_slice: float
    acute: bool  # acute infarct: oedema raises native T1 and T2 further

    @property
    def dysfunction(self) -> float:
        """Loss of wall motion at the infarct's centre: 0.45 (hypokinetic, subendocardial) to 1 (akinetic, from
        80 % transmurality on)."""
        return float(np.clip(0.2 + self.transmurality, 0.45, 1.0))


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """Scanner and protocol settings of one subject, shared by its images (shading, blur, texture, scale) and per
    contrast. SNRs are a reference tissue's signal over the Rician noise standard deviation."""

    field_strength_t: float  # 1.5 or 3.0
    shading: tuple[float, ...]  # coefficients of u, v, uv, u^2, v^2, w over normalised coordinates
    shading_range: tuple[float, float]  # the field is rescaled to this range
    coil_hot_spot: tuple[float, float, float] | None  # (u, v, width): a surface-coil bright spot (OOD only)
    blur_px: float  # in-plane Gaussian sigma of partial volume
    texture: float  # relative amplitude of smooth in-tissue signal variation
    intensity_scale: float  # stored value of the 99.5th percentile of a noise-free image
    lge_ti_ratio: float  # LGE inversion time / myocardial null time; 1 is perfect nulling
    lge_snr: float  # blood pool
    cine_flip_deg: float  # bSSFP flip angle: sets the blood-myocardium-fat contrast
    cine_snr: float  # blood pool
    cine_frames: int  # frames over one RR interval
    rr_interval_ms: float
    blood_inflow: float  # bSSFP blood brightening by inflow (1 = none)
    t2w_echo_ms: float  # T2-weighted effective echo time
    t2w_snr: float  # myocardium
    t2w_blood_residual: float  # dark-blood preparation: fraction of blood signal left


@dataclasses.dataclass(frozen=True)
class Subject:
    """Everything needed to render one synthetic subject."""

    subject_id: int
    geometry: Geometry
    lv: LeftVentricle
    rv: RightVentricle
    thorax: Thorax
    scar: Scar | None
    tissues: dict[str, Tissue]  # per label name (labels of one tissue class share values)
    acquisition: Acquisition

    @property
    def split(self) -> str:
        return split_of(self.subject_id)

    @property
    def inversion_time_ms(self) -> float:
        """LGE inversion time: the myocardial null time (T1 ln 2) times the subject's mis-nulling ratio."""
        return self.acquisition.lge_ti_ratio * self.tissues["lv_myocardium"].t1_post_ms * math.log(2.0)


def split_of(subject_id: int) -> str:
    """Deterministic split: ids from OOD_FIRST_ID on "ood"; below, id % 10 in 0-6 train, 7 validation, 8-9 test."""
    _check_id(subject_id)
    if subject_id >= OOD_FIRST_ID:
        return "ood"
    rest = subject_id % 10
    return "train" if rest < 7 else "validation" if rest == 7 else "test"


def subject_ids(split: str, count: int) -> list[int]:
    """The first `count` subject ids of `split` (one of SPLITS), increasing."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {SPLITS}")
    if count < 0:
        raise InputError(f"count must be >= 0; got {count}")
    if split == "ood":
        return list(range(OOD_FIRST_ID, OOD_FIRST_ID + count))
    ids: list[int] = []
    candidate = 0
    while len(ids) < count:
        if split_of(candidate) == split:
            ids.append(candidate)
        candidate += 1
    return ids


def make_subject(subject_id: int) -> Subject:
    """Draw a subject from a generator seeded with its id (the OOD family from wider acquisition ranges)."""
    _check_id(subject_id)
    rng = np.random.default_rng([subject_id, 20250])
    ood = subject_id >= OOD_FIRST_ID
    lv = _make_lv(rng)
    geometry = _make_geometry(rng, lv, ood)
    acquisition = _make_acquisition(rng, ood)
    scar = _make_scar(rng, lv, geometry) if rng.random() >= 0.2 else None
    return Subject(
        subject_id=subject_id,
        geometry=geometry,
        lv=lv,
        rv=_make_rv(rng),
        thorax=_make_thorax(rng, lv),
        scar=scar,
        tissues=_make_tissues(rng, acquisition.field_strength_t, scar),
        acquisition=acquisition,
    )


def slice_depths_mm(subject: Subject) -> np.ndarray:
    """(z,) depth of each slice below the LV base in mm (the last slice is the most basal)."""
    n_slices, spacing_z = subject.geometry.shape[0], subject.geometry.spacing[2]
    return subject.lv.base_depth_mm + (n_slices - 1 - np.arange(n_slices)) * spacing_z


def in_plane_mm(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """x (1, 1, nx) and y (1, ny, 1) in mm from the image centre."""
    _, ny, nx = geometry.shape
    x = (np.arange(nx) - (nx - 1) / 2) * geometry.spacing[0]
    y = (np.arange(ny) - (ny - 1) / 2) * geometry.spacing[1]
    return x[None, None, :], y[None, :, None]


def lv_centre_mm(subject: Subject) -> tuple[np.ndarray, np.ndarray]:
    """In-plane LV centre (x, y) of every slice, each (z, 1, 1) in mm (fixed over the cardiac cycle)."""
    depth = slice_depths_mm(subject)[:, None, None]
    lv = subject.lv
    return lv.centre_mm[0] + lv.tilt[0] * depth, lv.centre_mm[1] + lv.tilt[1] * depth


def taper(u: np.ndarray) -> np.ndarray:
    """Radius profile along the long axis: 1 at the base (u = 0), 0 at and beyond the apex (u >= 1)."""
    return (1.0 - np.clip(u, 0.0, 1.0) ** TAPER_EXPONENT) ** (1.0 / TAPER_EXPONENT)


def lv_radii_ed(lv: LeftVentricle, theta: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """End-diastolic endo- and epicardial radius (mm) at angle `theta` (rad) and `depth` (mm)."""
    a1, p1, a2, p2 = lv.wall_harmonics
    wall = lv.wall_mm * (1.0 + a1 * np.cos(theta - p1) + a2 * np.cos(2 * theta - p2))
    cavity = 0.5 * lv.base_diameter_mm * (1.0 + lv.ellipticity[0] * np.cos(2 * (theta - lv.ellipticity[1])))
    return cavity * taper(depth / lv.length_mm), (cavity + wall) * taper(depth / (lv.length_mm + lv.wall_mm))


def scar_profile(scar: Scar | None, theta: np.ndarray) -> np.ndarray:
    """Infarct weight in [0, 1] at angle `theta` (rad, (z, ...) with z slices): 1 at the territory's centre, falling
    to 0 at its angular edges and outside its slice range; its endocardial-to-epicardial depth is transmurality x this."""
    if scar is None:
        return np.zeros(theta.shape)
    n_slices = theta.shape[0]
    index = np.arange(n_slices).reshape((n_slices,) + (1,) * (theta.ndim - 1))
    first, last = scar.slices
    in_range = (index >= first) & (index <= last)
    middle = 0.5 * (first + last)
    # extent shrinks towards the ends of the slice range (to 70 % at the end slices)
    half_span = max(0.5 * (last - first), 0.5)
    extent = scar.extent_deg * (1.0 - 0.3 * np.abs(index - middle) / half_span)
    centre = np.radians(scar.centre_deg + scar.twist_deg_per_slice * (index - middle))
    offset = np.angle(np.exp(1j * (theta - centre)))
    half = np.radians(extent) / 2
    profile = np.clip(1.4 * np.cos(0.5 * np.pi * np.abs(offset) / half), 0.0, 1.0) * (np.abs(offset) < half)
    return np.where(in_range, profile, 0.0)


def rv_regions(rv: RightVentricle, dx: np.ndarray, dy: np.ndarray, relative_depth: np.ndarray,
               lv_radius: np.ndarray, contraction: float, grow_mm: np.ndarray | float = 0.0
               ) -> tuple[np.ndarray, np.ndarray]:
    """RV cavity and cavity-plus-wall masks from offsets (dx, dy) to the LV centre (mm) at `contraction` (0 ED, 1 ES)."""
    scale = taper(relative_depth / rv.length_fraction) * math.sqrt(1.0 - rv.ejection_fraction * contraction)
    across, along = rv.semi_axes_mm[0] * scale, rv.semi_axes_mm[1] * scale
    tilt = math.radians(rv.tilt_deg)
    # screen frame rotated by the tilt: u points from the LV centre away from the septum
    u = -(dx * math.cos(tilt) - dy * math.sin(tilt))
    v = dx * math.sin(tilt) + dy * math.cos(tilt)
    u = u - rv.centre_distance * lv_radius
    present = scale > 0

    def inside(extra: np.ndarray | float) -> np.ndarray:
        a, b = across + extra, along + extra
        return present & ((u / np.maximum(a, 1e-6)) ** 2 + (v / np.maximum(b, 1e-6)) ** 2 < 1.0)

    return inside(grow_mm), inside(grow_mm + rv.wall_mm)


def paint_thorax(labels: np.ndarray, thorax: Thorax, x: np.ndarray, y: np.ndarray,
                 relative_depth: np.ndarray) -> None:
    """Body, fat ring, chest-wall muscle, lungs, liver (rising towards the apex) and descending aorta, in place."""
    centre, axes, angle = thorax.body_centre_mm, thorax.body_semi_axes_mm, thorax.body_angle_deg
    labels[np.broadcast_to(_ellipse(x, y, centre, axes, angle), labels.shape)] = LABELS["fat"]
    labels[np.broadcast_to(_ellipse(x, y, centre, axes, angle, thorax.subcutaneous_fat_mm),
                           labels.shape)] = LABELS["body"]
    cavity = np.broadcast_to(
        _ellipse(x, y, centre, axes, angle, thorax.subcutaneous_fat_mm + thorax.chest_wall_mm), labels.shape)
    labels[cavity] = LABELS["lung"]
    grow = 0.75 + 0.5 * relative_depth
    liver_centre = (thorax.liver_centre_mm[0], thorax.liver_centre_mm[1] - 15.0 * relative_depth)
    liver_axes = (thorax.liver_semi_axes_mm[0] * grow, thorax.liver_semi_axes_mm[1] * grow)
    labels[cavity & _ellipse(x, y, liver_centre, liver_axes, 0.0)] = LABELS["liver"]
    aorta = np.hypot(x - thorax.aorta_centre_mm[0], y - thorax.aorta_centre_mm[1]) < thorax.aorta_radius_mm
    labels[cavity & aorta] = LABELS["aorta"]


# --- drawing the subject -------------------------------------------------------------------------------------


def _check_id(subject_id: int) -> None:
    if isinstance(subject_id, bool) or not isinstance(subject_id, (int, np.integer)) or subject_id < 0:
        raise InputError(f"a phantom subject id must be a non-negative integer; got {subject_id!r}")


def _make_lv(rng: np.random.Generator) -> LeftVentricle:
    return LeftVentricle(
        base_diameter_mm=rng.uniform(47.0, 54.0),
        length_mm=rng.uniform(72.0, 92.0),
        wall_mm=rng.uniform(8.0, 11.0),
        wall_harmonics=(rng.uniform(0.0, 0.07), rng.uniform(-np.pi, np.pi),
                        rng.uniform(0.0, 0.05), rng.uniform(-np.pi, np.pi)),
        ellipticity=(rng.uniform(0.0, 0.05), rng.uniform(-np.pi, np.pi)),
        centre_mm=(rng.uniform(-10.0, 10.0), rng.uniform(-10.0, 10.0)),
        tilt=(rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)),
        base_depth_mm=rng.uniform(0.0, 5.0),
        ejection_fraction=rng.uniform(0.55, 0.70),
        end_systole_phase=rng.uniform(0.32, 0.40),
        torsion_deg=rng.uniform(8.0, 16.0),
    )


def _make_geometry(rng: np.random.Generator, lv: LeftVentricle, ood: bool) -> Geometry:
    thickness = rng.uniform(6.0, 10.0)
    spacing_z = thickness + rng.uniform(0.0, 2.0)
    # enough slices to reach from the base to just short of the apex
    n_slices = int(np.clip(round((lv.length_mm - lv.base_depth_mm - 6.0) / spacing_z) + 1, 7, 14))
    pixel = rng.uniform(0.9, 2.3) if ood else rng.uniform(1.1, 2.0)
    # field of view 180-260 mm, rectangular at times, matrix a multiple of 8
    fov = rng.uniform(180.0, 260.0, 2) * (1.0, rng.choice([1.0, rng.uniform(0.8, 1.0)]))
    ny, nx = (int(np.clip(8 * round(f / pixel / 8), 96, 256)) for f in fov)
    shape = (n_slices, ny, nx)
    spacing = (pixel, pixel, spacing_z)
    # Long axis base -> apex points left, anterior, inferior (LPS); image up is anterior.
    apex = np.array([0.55, -0.45, -0.70])
    apex /= np.linalg.norm(apex)
    anterior = np.array([0.0, -1.0, 0.0])
    anterior -= (anterior @ apex) * apex
    anterior /= np.linalg.norm(anterior)
    z_axis, y_axis = -apex, -anterior
    frame = np.column_stack([np.cross(y_axis, z_axis), y_axis, z_axis])
    wobble = Rotation.from_rotvec(rng.normal(size=3) / 1.7 * np.radians(rng.uniform(0.0, 25.0 if ood else 15.0)))
    direction = wobble.as_matrix() @ frame
    centre = np.array([25.0, 10.0, -20.0]) + rng.normal(0.0, 15.0, 3)
    half_extent = np.array(spacing) * (np.array(shape[::-1]) - 1) / 2
    origin = centre - direction @ half_extent
    return Geometry(shape, spacing, thickness, tuple(origin), tuple(direction.ravel()))


def _make_acquisition(rng: np.random.Generator, ood: bool) -> Acquisition:
    """Training ranges, or the wider out-of-distribution ones: heavier noise, stronger shading of another form
    (a surface-coil hot spot), contrast and intensity scale outside the training ranges."""
    # Most LGE inversion times sit near the null point; many are set too long (grey myocardium, weaker scar contrast).
    ti_ratio = rng.uniform(0.96, 1.08) if rng.random() < 0.55 else rng.uniform(1.08, 1.5)
    if ood:
        ti_ratio = rng.uniform(0.9, 1.6)
    log_uniform = lambda low, high: float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return Acquisition(
        field_strength_t=float(rng.choice([1.5, 3.0], p=[0.6, 0.4])),
        shading=tuple(rng.normal(0.0, 1.0, 6)),
        shading_range=(rng.uniform(0.35, 0.6), rng.uniform(1.4, 2.0)) if ood else
        (rng.uniform(0.55, 0.85), rng.uniform(1.1, 1.5)),
        coil_hot_spot=(rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8), rng.uniform(0.3, 0.7)) if ood else None,
        blur_px=rng.uniform(0.2, 1.2) if ood else rng.uniform(0.4, 0.9),
        texture=rng.uniform(0.08, 0.2) if ood else rng.uniform(0.03, 0.12),
        intensity_scale=log_uniform(60.0, 30000.0) if ood else log_uniform(300.0, 4000.0),
        lge_ti_ratio=ti_ratio,
        lge_snr=log_uniform(3.0, 8.0) if ood else log_uniform(5.0, 30.0),
        cine_flip_deg=rng.uniform(25.0, 85.0) if ood else rng.uniform(35.0, 70.0),
        cine_snr=log_uniform(6.0, 15.0) if ood else log_uniform(12.0, 40.0),
        cine_frames=int(rng.integers(25, 31)),
        rr_interval_ms=rng.uniform(700.0, 1100.0),
        blood_inflow=rng.uniform(1.0, 1.3),
        t2w_echo_ms=rng.uniform(55.0, 80.0),
        t2w_snr=log_uniform(4.0, 10.0) if ood else log_uniform(8.0, 25.0),
        t2w_blood_residual=rng.uniform(0.02, 0.12),
    )


def _make_rv(rng: np.random.Generator) -> RightVentricle:
    return RightVentricle(
        semi_axes_mm=(rng.uniform(22.0, 30.0), rng.uniform(40.0, 52.0)),
        centre_distance=rng.uniform(0.9, 1.1),
        tilt_deg=rng.uniform(-10.0, 20.0),
        wall_mm=rng.uniform(3.0, 4.5),
        length_fraction=rng.uniform(0.75, 0.9),
        ejection_fraction=rng.uniform(0.45, 0.6),
    )


def _make_thorax(rng: np.random.Generator, lv: LeftVentricle) -> Thorax:
    half_axes = (rng.uniform(150.0, 180.0), rng.uniform(100.0, 125.0))
    fat, muscle = rng.uniform(6.0, 20.0), rng.uniform(8.0, 15.0)
    heart_top = lv.centre_mm[1] - lv.base_diameter_mm / 2 - lv.wall_mm
    body_top = heart_top - rng.uniform(20.0, 40.0) - muscle - fat
    body_centre = (lv.centre_mm[0] - rng.uniform(20.0, 50.0), body_top + half_axes[1])
    return Thorax(
        body_centre_mm=body_centre,
        body_semi_axes_mm=half_axes,
        body_angle_deg=rng.uniform(-20.0, 20.0),
        subcutaneous_fat_mm=fat,
        chest_wall_mm=muscle,
        liver_centre_mm=(lv.centre_mm[0] - rng.uniform(40.0, 60.0), lv.centre_mm[1] + rng.uniform(85.0, 100.0)),
        liver_semi_axes_mm=(rng.uniform(60.0, 80.0), rng.uniform(35.0, 45.0)),
        aorta_centre_mm=(lv.centre_mm[0] + rng.uniform(0.0, 20.0), lv.centre_mm[1] + rng.uniform(58.0, 70.0)),
        aorta_radius_mm=rng.uniform(9.0, 13.0),
        pericardial_fat_mm=rng.uniform(1.5, 5.0),
        pericardial_fat_angle_deg=rng.uniform(60.0, 240.0),
    )


def _make_scar(rng: np.random.Generator, lv: LeftVentricle, geometry: Geometry) -> Scar:
    territory = str(rng.choice(list(TERRITORY_CENTRES_DEG), p=[0.45, 0.3, 0.25]))
    n_slices, spacing_z = geometry.shape[0], geometry.spacing[2]
    depths = lv.base_depth_mm + (n_slices - 1 - np.arange(n_slices)) * spacing_z
    with_cavity = np.flatnonzero(depths < 0.9 * lv.length_mm)  # slices showing a ring, not just the apical cap
    length = int(rng.integers(2, max(3, int(0.6 * with_cavity.size)) + 1))
    length = min(length, with_cavity.size)
    first = int(rng.integers(with_cavity[0], with_cavity[-1] - length + 2))
    return Scar(
        territory=territory,
        centre_deg=rng.uniform(*TERRITORY_CENTRES_DEG[territory]),
        extent_deg=rng.uniform(40.0, 110.0),
        transmurality=rng.uniform(0.25, 1.0),
        slices=(first, first + length - 1),
        twist_deg_per_slice=rng.uniform(-5.0, 5.0),
        acute=bool(rng.random() < 0.35),
    )


def _make_tissues(rng: np.random.Generator, field_strength_t: float, scar: Scar | None) -> dict[str, Tissue]:
    dose = rng.uniform(0.85, 1.2)  # contrast dose and delay scale every post-contrast T1

    def jitter(value: float, spread: float) -> float:
        return float(value * (1.0 + np.clip(rng.normal(0.0, spread), -2.5 * spread, 2.5 * spread)))

    def at_field(name: str, tissue: Tissue) -> Tissue:
        if field_strength_t < 2.0:
            return tissue
        native, post, t2 = FIELD_3T_RATIOS[name]
        return Tissue(tissue.proton_density, tissue.t1_native_ms * native, tissue.t1_post_ms * post, tissue.t2_ms * t2)

    classes = {
        name: at_field(name, Tissue(jitter(t.proton_density, 0.03), jitter(t.t1_native_ms, 0.04),
                                    jitter(t.t1_post_ms * dose, 0.05), jitter(t.t2_ms, 0.05)))
        for name, t in REFERENCE_TISSUES.items()
    }
    # Scar gadolinium uptake varies: its post-contrast T1 lies 45-72 % of the myocardium's (blood: about 67 %), so scar
    # ranges from a little darker to brighter than the blood pool, as in clinical LGE (poor uptake: poor contrast).
    myocardium = classes["myocardium"]
    classes["scar"] = dataclasses.replace(classes["scar"], t1_post_ms=myocardium.t1_post_ms * rng.uniform(0.45, 0.72))
    if scar is not None and scar.acute:  # oedema: native T1 and T2 raised further
        classes["scar"] = dataclasses.replace(classes["scar"], t1_native_ms=classes["scar"].t1_native_ms * 1.1,
                                              t2_ms=classes["scar"].t2_ms * 1.3)
    classes["air"] = REFERENCE_TISSUES["air"]
    return {label: classes[tissue] for label, tissue in TISSUE_OF_LABEL.items()}


def _ellipse(x: np.ndarray, y: np.ndarray, centre: tuple[float, float], semi_axes, angle_deg: float,
             shrink_mm: float = 0.0) -> np.ndarray:
    """Mask of the ellipse (semi-axes reduced by `shrink_mm`) rotated by `angle_deg` on screen."""
    angle = math.radians(angle_deg)
    dx, dy = x - centre[0], y - centre[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    return (u / (semi_axes[0] - shrink_mm)) ** 2 + (v / (semi_axes[1] - shrink_mm)) ** 2 < 1.0

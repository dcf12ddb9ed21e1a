"""Synthetic short-axis cardiac MR subjects: anatomy, tissue properties, rendered images and ground truth.

A subject is fully determined by its integer id (`make_subject`): stack geometry, LV/RV shape, surrounding
anatomy, an optional scar in one coronary territory, a per-subject 1.5 T tissue table and LGE acquisition
settings. Renderers turn a subject into a labelmap (any cardiac phase) and images on the subject's grid.

In-plane coordinates are millimetres from the image centre, x to the image right (patient left / lateral),
y down the image (inferior). Angles about the LV centre are in degrees, counter-clockwise on screen:
lateral 0, anterior 90, septal 180, inferior 270. Depth is millimetres from the LV base towards the apex.
Slice index increases from apex to base (the slice axis points from apex to base, so the frame is a rotation).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from .errors import InputError
from .io.t1_series import T1Series
from .volume import Volume

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

SPLITS = ("train", "validation", "test")
# MOLLI readout saturation: the apparent relaxation rate is 1/T1* = 1/T1 + this (ms^-1), so T1* / T1 is about 0.8 in
# myocardium, as in bSSFP-read MOLLI.
LOOK_LOCKER_RATE_PER_MS = 1.0 / 4000.0
TERRITORY_CENTRES_DEG = {"LAD": (90.0, 150.0), "RCA": (210.0, 270.0), "LCx": (-45.0, 45.0)}
_TAPER_EXPONENT = 3.5  # LV/RV profile (1 - u^p)^(1/p): nearly cylindrical at the base, closing at the apex
_END_SYSTOLE = 0.35  # phase of maximal contraction


@dataclasses.dataclass(frozen=True)
class Tissue:
    """MR properties of one tissue at 1.5 T. proton_density relative to water; times in ms."""

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
        """A Volume on this grid."""
        return Volume(array, self.spacing, self.origin, self.direction, dict(metadata))


@dataclasses.dataclass(frozen=True)
class LeftVentricle:
    """LV at end-diastole: a truncated ellipsoid-like shell along the long axis."""

    base_diameter_mm: float  # cavity diameter at the base
    length_mm: float  # cavity length from the base to the apex
    wall_mm: float  # mean wall thickness
    wall_harmonics: tuple[float, float, float, float]  # (a1, phase1, a2, phase2): relative amplitudes, radians
    ellipticity: tuple[float, float]  # (relative amplitude, angle in radians) of the cavity's cos(2 theta) term
    centre_mm: tuple[float, float]  # in-plane centre at the base
    tilt: tuple[float, float]  # in-plane shift of the centre per mm of depth
    base_depth_mm: float  # depth of the most basal slice (0 = the base plane)
    ejection_fraction: float


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


@dataclasses.dataclass(frozen=True)
class LGEAcquisition:
    """Magnitude inversion-recovery LGE settings."""

    ti_ratio: float  # inversion time / myocardial null time; 1 is perfect nulling
    snr: float  # blood-pool signal over noise standard deviation
    shading: tuple[float, ...]  # coefficients of u, v, uv, u^2, v^2, w over normalised coordinates
    shading_range: tuple[float, float]  # the field is rescaled to this range
    blur_px: float  # in-plane Gaussian sigma of partial volume
    texture: float  # relative amplitude of smooth in-tissue signal variation
    peak_intensity: float  # stored value of the 99.5th percentile of the noise-free image


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
    lge: LGEAcquisition

    @property
    def inversion_time_ms(self) -> float:
        """LGE inversion time: the myocardial null time (T1 ln 2) times the subject's mis-nulling ratio."""
        return self.lge.ti_ratio * self.tissues["lv_myocardium"].t1_post_ms * math.log(2.0)


def split_of(subject_id: int) -> str:
    """Deterministic split: id % 10 in 0-6 train, 7 validation, 8-9 test."""
    _check_id(subject_id)
    rest = subject_id % 10
    return "train" if rest < 7 else "validation" if rest == 7 else "test"


def subject_ids(split: str, count: int) -> list[int]:
    """The first `count` subject ids of `split`, increasing."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {SPLITS}")
    if count < 0:
        raise InputError(f"count must be >= 0; got {count}")
    ids: list[int] = []
    candidate = 0
    while len(ids) < count:
        if split_of(candidate) == split:
            ids.append(candidate)
        candidate += 1
    return ids


def make_subject(subject_id: int) -> Subject:
    """Draw a subject from a generator seeded with its id."""
    _check_id(subject_id)
    rng = np.random.default_rng([subject_id, 20250])
    lv = _make_lv(rng)
    geometry = _make_geometry(rng, lv)
    return Subject(
        subject_id=subject_id,
        geometry=geometry,
        lv=lv,
        rv=_make_rv(rng),
        thorax=_make_thorax(rng, lv),
        scar=_make_scar(rng, lv, geometry) if rng.random() >= 0.2 else None,
        tissues=_make_tissues(rng),
        lge=_make_lge(rng),
    )


def render_labels(subject: Subject, phase: float = 0.0) -> Volume:
    """uint8 labelmap (z, y, x) of `subject` at cardiac `phase` in [0, 1) (0 = end-diastole)."""
    if not 0.0 <= phase < 1.0:
        raise InputError(f"cardiac phase must lie in [0, 1); got {phase}")
    geometry, lv = subject.geometry, subject.lv
    x, y = _in_plane_mm(geometry)
    depth = slice_depths_mm(subject)[:, None, None]
    cx = lv.centre_mm[0] + lv.tilt[0] * depth
    cy = lv.centre_mm[1] + lv.tilt[1] * depth
    dx, dy = x - cx, y - cy
    radius = np.hypot(dx, dy)
    theta = np.arctan2(-dy, dx)
    contraction = _contraction(phase)
    r_in, r_out = _lv_radii(lv, theta, depth, contraction)
    mean_r_out = _lv_radii(lv, np.linspace(-np.pi, np.pi, 72, endpoint=False), depth, contraction)[1].mean(
        axis=-1, keepdims=True)

    labels = np.zeros(geometry.shape, dtype=np.uint8)
    _paint_thorax(labels, subject.thorax, x, y, depth / lv.length_mm)
    rv_cavity, rv_outer = _rv_regions(subject.rv, dx, dy, depth / lv.length_mm, mean_r_out, contraction)
    fat_width = subject.thorax.pericardial_fat_mm * 0.5 * (
        1 + np.cos(theta - math.radians(subject.thorax.pericardial_fat_angle_deg)))
    pericardium = (r_out > 0) & (radius < r_out + fat_width)
    pericardium |= _rv_regions(subject.rv, dx, dy, depth / lv.length_mm, mean_r_out, contraction,
                               grow_mm=fat_width)[1]
    labels[pericardium] = LABELS["fat"]
    labels[rv_outer] = LABELS["rv_wall"]
    labels[rv_cavity] = LABELS["rv_blood"]
    wall = radius < r_out
    labels[wall] = LABELS["lv_myocardium"]
    labels[radius < r_in] = LABELS["lv_blood"]
    if subject.scar is not None:
        depth_in_wall = (radius - r_in) / np.maximum(r_out - r_in, 1e-6)
        labels[wall & (radius >= r_in) & _scar_region(subject.scar, theta, depth_in_wall)] = LABELS["scar"]
    return geometry.volume(labels, phantom_subject=subject.subject_id, cardiac_phase=float(phase), units="label")


def render_lge(subject: Subject, labels: Volume | None = None) -> Volume:
    """int16 magnitude inversion-recovery LGE (z, y, x): PD |1 - 2 exp(-TI / T1post)| with smooth texture,
    partial-volume blur, coil shading and Rician noise."""
    labels = render_labels(subject) if labels is None else labels
    reference = subject.geometry.volume(np.zeros(subject.geometry.shape, dtype=np.uint8))
    reference.require_same_geometry(labels, f"the labelmap and phantom subject {subject.subject_id}'s grid")
    ti = subject.inversion_time_ms
    lut = np.zeros(max(LABELS.values()) + 1)
    for name, index in LABELS.items():
        tissue = subject.tissues[name]
        lut[index] = tissue.proton_density * abs(1.0 - 2.0 * math.exp(-ti / tissue.t1_post_ms))
    acquisition = subject.lge
    rng = np.random.default_rng([subject.subject_id, 20251])
    texture = gaussian_filter(rng.normal(0.0, 1.0, labels.array.shape), sigma=(0.0, 2.0, 2.0))
    signal = lut[labels.array] * (1.0 + acquisition.texture * texture / texture.std())
    signal = gaussian_filter(signal, sigma=(0.0, acquisition.blur_px, acquisition.blur_px))
    signal *= _shading_field(acquisition, subject.geometry.shape)
    sigma = lut[LABELS["lv_blood"]] / acquisition.snr
    noisy = np.hypot(signal + rng.normal(0.0, sigma, signal.shape), rng.normal(0.0, sigma, signal.shape))
    scale = acquisition.peak_intensity / np.percentile(signal, 99.5)
    image = np.clip(np.rint(noisy * scale), 0, np.iinfo(np.int16).max).astype(np.int16)
    return subject.geometry.volume(
        image, modality="MR", contrast="LGE", inversion_time_ms=round(ti, 1), phantom_subject=subject.subject_id,
        units="a.u.", field_strength_t=1.5, slice_thickness_mm=subject.geometry.slice_thickness_mm)


def molli_inversion_times(first_ms: float = 100.0, rr_ms: float = 1000.0, offset_ms: float = 80.0
                          ) -> tuple[list[float], list[int]]:
    """MOLLI 5(3)3 inversion times in acquisition order and the inversion each image follows (0 or 1)."""
    times = [first_ms + k * rr_ms for k in range(5)] + [first_ms + offset_ms + k * rr_ms for k in range(3)]
    return times, [0] * 5 + [1] * 3


def render_molli(subject: Subject, labels: Volume | None = None, *, post_contrast: bool = False,
                 snr: float = 40.0) -> T1Series:
    """Magnitude MOLLI 5(3)3 source images of every slice from the Look-Locker signal equation.

    Each voxel follows |M0 (T1*/T1 - (1 + T1*/T1) exp(-TI/T1*))| with 1/T1* = 1/T1 + LOOK_LOCKER_RATE_PER_MS and
    M0 the proton density: an ideal MOLLI (full recovery between the inversions), so a correct fit returns the
    tissue table's T1 exactly (T1 = T1* (B/A - 1)). Coil shading and Rician noise (blood signal / `snr`) are added.
    """
    labels = render_labels(subject) if labels is None else labels
    times, _ = molli_inversion_times()
    lut_t1 = np.ones(max(LABELS.values()) + 1)
    lut_pd = np.zeros_like(lut_t1)
    for name, index in LABELS.items():
        tissue = subject.tissues[name]
        lut_t1[index] = tissue.t1_post_ms if post_contrast else tissue.t1_native_ms
        lut_pd[index] = tissue.proton_density
    t1, pd = lut_t1[labels.array], lut_pd[labels.array] * _shading_field(subject.lge, labels.spatial_shape)
    t1_star = 1.0 / (1.0 / t1 + LOOK_LOCKER_RATE_PER_MS)
    ti = np.asarray(times)[:, None, None, None]
    signal = pd * np.abs(t1_star / t1 - (1.0 + t1_star / t1) * np.exp(-ti / t1_star))
    rng = np.random.default_rng([subject.subject_id, 20252, int(post_contrast)])
    sigma = subject.tissues["lv_blood"].proton_density / snr
    noisy = np.hypot(signal + rng.normal(0.0, sigma, signal.shape), rng.normal(0.0, sigma, signal.shape))
    images = labels.with_array((1000.0 * noisy).astype(np.float32), modality="MR",
                               contrast="MOLLI post-contrast" if post_contrast else "MOLLI native", units="a.u.")
    order = np.argsort(times)
    slices = labels.spatial_shape[0]
    return T1Series(images.with_array(images.array[order]), np.repeat(np.asarray(times)[order, None], slices, 1),
                    np.repeat(order[:, None], slices, 1), "phantom MOLLI 5(3)3")


def true_ecv_percent(subject: Subject, label: str, haematocrit: float) -> float:
    """The ECV (%) of tissue `label` implied by the subject's native and post-contrast T1s and the haematocrit."""
    tissue, blood = subject.tissues[label], subject.tissues["lv_blood"]
    delta_tissue = 1.0 / tissue.t1_post_ms - 1.0 / tissue.t1_native_ms
    delta_blood = 1.0 / blood.t1_post_ms - 1.0 / blood.t1_native_ms
    return 100.0 * (1.0 - haematocrit) * delta_tissue / delta_blood


def tissue_masks(labels: Volume) -> dict[str, np.ndarray]:
    """Boolean (z, y, x) masks: healthy LV "myocardium", "scar", LV "blood" pool, their union "heart_roi", "rv"."""
    array = labels.array
    masks = {
        "myocardium": array == LABELS["lv_myocardium"],
        "scar": array == LABELS["scar"],
        "blood": array == LABELS["lv_blood"],
        "rv": (array == LABELS["rv_blood"]) | (array == LABELS["rv_wall"]),
    }
    masks["heart_roi"] = masks["myocardium"] | masks["scar"] | masks["blood"]
    return masks


def lge_study(subject_id: int) -> dict:
    """One LGE study: {"subject": Subject, "lge": Volume, "labels": Volume, "masks": tissue_masks(labels)}."""
    subject = make_subject(subject_id)
    labels = render_labels(subject)
    return {"subject": subject, "lge": render_lge(subject, labels), "labels": labels, "masks": tissue_masks(labels)}


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
        ejection_fraction=rng.uniform(0.5, 0.68),
    )


def _make_geometry(rng: np.random.Generator, lv: LeftVentricle) -> Geometry:
    spacing_z = rng.uniform(8.0, 10.0)
    # enough slices to reach from the base to just short of the apex
    n_slices = int(np.clip(round((lv.length_mm - lv.base_depth_mm - 6.0) / spacing_z) + 1, 8, 12))
    pixel = rng.uniform(1.2, 1.8)
    shape = (n_slices, 128, 128)
    spacing = (pixel, pixel, spacing_z)
    # Long axis base -> apex points left, anterior, inferior (LPS); image up is anterior.
    apex = np.array([0.55, -0.45, -0.70])
    apex /= np.linalg.norm(apex)
    anterior = np.array([0.0, -1.0, 0.0])
    anterior -= (anterior @ apex) * apex
    anterior /= np.linalg.norm(anterior)
    z_axis, y_axis = -apex, -anterior
    frame = np.column_stack([np.cross(y_axis, z_axis), y_axis, z_axis])
    wobble = Rotation.from_rotvec(rng.normal(size=3) / 1.7 * np.radians(rng.uniform(0.0, 15.0)))
    direction = wobble.as_matrix() @ frame
    centre = np.array([25.0, 10.0, -20.0]) + rng.normal(0.0, 15.0, 3)
    half_extent = np.array(spacing) * (np.array(shape[::-1]) - 1) / 2
    origin = centre - direction @ half_extent
    return Geometry(shape, spacing, spacing_z * rng.uniform(0.8, 1.0), tuple(origin), tuple(direction.ravel()))


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
    )


def _make_tissues(rng: np.random.Generator) -> dict[str, Tissue]:
    dose = rng.uniform(0.85, 1.2)  # contrast dose and delay scale every post-contrast T1

    def jitter(value: float, spread: float) -> float:
        return float(value * (1.0 + np.clip(rng.normal(0.0, spread), -2.5 * spread, 2.5 * spread)))

    classes = {
        name: Tissue(jitter(t.proton_density, 0.03), jitter(t.t1_native_ms, 0.04), jitter(t.t1_post_ms * dose, 0.05),
                     jitter(t.t2_ms, 0.05))
        for name, t in REFERENCE_TISSUES.items()
    }
    # Scar gadolinium uptake varies: its post-contrast T1 lies 45-72 % of the myocardium's (blood: about 67 %), so scar
    # ranges from a little darker to brighter than the blood pool, as in clinical LGE (poor uptake: poor contrast).
    myocardium = classes["myocardium"]
    classes["scar"] = dataclasses.replace(classes["scar"], t1_post_ms=myocardium.t1_post_ms * rng.uniform(0.45, 0.72))
    classes["air"] = REFERENCE_TISSUES["air"]
    return {label: classes[tissue] for label, tissue in TISSUE_OF_LABEL.items()}


def _make_lge(rng: np.random.Generator) -> LGEAcquisition:
    # Most inversion times sit near the null point; many are set too long (grey myocardium, weaker scar contrast).
    ti_ratio = rng.uniform(0.96, 1.08) if rng.random() < 0.55 else rng.uniform(1.08, 1.5)
    return LGEAcquisition(
        ti_ratio=ti_ratio,
        snr=float(np.exp(rng.uniform(np.log(6.0), np.log(30.0)))),
        shading=tuple(rng.normal(0.0, 1.0, 6)),
        shading_range=(rng.uniform(0.6, 0.85), rng.uniform(1.1, 1.4)),
        blur_px=rng.uniform(0.4, 0.8),
        texture=rng.uniform(0.03, 0.12),
        peak_intensity=rng.uniform(800.0, 2500.0),
    )


# --- rendering helpers -----------------------------------------------------------------------------------------


def _in_plane_mm(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """x (1, 1, nx) and y (1, ny, 1) in mm from the image centre."""
    _, ny, nx = geometry.shape
    x = (np.arange(nx) - (nx - 1) / 2) * geometry.spacing[0]
    y = (np.arange(ny) - (ny - 1) / 2) * geometry.spacing[1]
    return x[None, None, :], y[None, :, None]


def slice_depths_mm(subject: Subject) -> np.ndarray:
    """(z,) depth of each slice below the LV base in mm (the last slice is the most basal)."""
    n_slices, spacing_z = subject.geometry.shape[0], subject.geometry.spacing[2]
    return subject.lv.base_depth_mm + (n_slices - 1 - np.arange(n_slices)) * spacing_z


def _taper(u: np.ndarray) -> np.ndarray:
    """Radius profile along the long axis: 1 at the base (u = 0), 0 at and beyond the apex (u >= 1)."""
    return (1.0 - np.clip(u, 0.0, 1.0) ** _TAPER_EXPONENT) ** (1.0 / _TAPER_EXPONENT)


def _contraction(phase: float) -> float:
    """0 at end-diastole, 1 at end-systole (phase 0.35), relaxed again by 0.7, then diastasis."""
    if phase <= _END_SYSTOLE:
        return math.sin(0.5 * math.pi * phase / _END_SYSTOLE) ** 2
    if phase <= 2 * _END_SYSTOLE:
        return math.cos(0.5 * math.pi * (phase - _END_SYSTOLE) / _END_SYSTOLE) ** 2
    return 0.0


def _lv_radii(lv: LeftVentricle, theta: np.ndarray, depth: np.ndarray, contraction: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Endo- and epicardial radius (mm) at angle `theta` (rad) and `depth` (mm); radial contraction keeps wall area."""
    a1, p1, a2, p2 = lv.wall_harmonics
    wall = lv.wall_mm * (1.0 + a1 * np.cos(theta - p1) + a2 * np.cos(2 * theta - p2))
    cavity = 0.5 * lv.base_diameter_mm * (1.0 + lv.ellipticity[0] * np.cos(2 * (theta - lv.ellipticity[1])))
    r_in_ed = cavity * _taper(depth / lv.length_mm)
    r_out_ed = (cavity + wall) * _taper(depth / (lv.length_mm + lv.wall_mm))
    r_in = r_in_ed * math.sqrt(1.0 - lv.ejection_fraction * contraction)
    return r_in, np.sqrt(r_out_ed**2 - r_in_ed**2 + r_in**2)


def _rv_regions(rv: RightVentricle, dx: np.ndarray, dy: np.ndarray, relative_depth: np.ndarray,
                lv_radius: np.ndarray, contraction: float, grow_mm: np.ndarray | float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """RV cavity and cavity-plus-wall masks from offsets (dx, dy) to the LV centre (mm)."""
    scale = _taper(relative_depth / rv.length_fraction) * math.sqrt(1.0 - rv.ejection_fraction * contraction)
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


def _ellipse(x: np.ndarray, y: np.ndarray, centre: tuple[float, float], semi_axes, angle_deg: float,
             shrink_mm: float = 0.0) -> np.ndarray:
    """Mask of the ellipse (semi-axes reduced by `shrink_mm`) rotated by `angle_deg` on screen."""
    angle = math.radians(angle_deg)
    dx, dy = x - centre[0], y - centre[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    return (u / (semi_axes[0] - shrink_mm)) ** 2 + (v / (semi_axes[1] - shrink_mm)) ** 2 < 1.0


def _paint_thorax(labels: np.ndarray, thorax: Thorax, x: np.ndarray, y: np.ndarray,
                  relative_depth: np.ndarray) -> None:
    """Body, fat ring, chest-wall muscle, lungs, liver (rising towards the apex) and descending aorta."""
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


def _scar_region(scar: Scar, theta: np.ndarray, depth_in_wall: np.ndarray) -> np.ndarray:
    """Scar voxels: within the territory's angle, from the endocardium to a depth tapering at the lateral edges."""
    n_slices = theta.shape[0]
    index = np.arange(n_slices)[:, None, None]
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
    return in_range & (profile > 0) & (depth_in_wall <= scar.transmurality * profile)


def _shading_field(acquisition: LGEAcquisition, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth receive-coil shading (z, y, x): a random low-order polynomial rescaled to the subject's range."""
    nz, ny, nx = shape
    w = np.linspace(-1.0, 1.0, nz)[:, None, None]
    v = np.linspace(-1.0, 1.0, ny)[None, :, None]
    u = np.linspace(-1.0, 1.0, nx)[None, None, :]
    c = acquisition.shading
    field = c[0] * u + c[1] * v + c[2] * u * v + c[3] * u**2 + c[4] * v**2 + 0.3 * c[5] * w
    field = np.broadcast_to(field, shape)
    low, high = acquisition.shading_range
    span = field.max() - field.min()
    return low + (high - low) * (field - field.min()) / (span if span > 0 else 1.0)

"""Myocardial strain from a cine by dense optical flow: Lagrangian Green-Lagrange strain, radial and circumferential.

Method, per short-axis slice that holds ED myocardium:
1. Crop the slice to the ED myocardium's bounding box plus `margin_mm` on each side (the flow only needs the heart)
   and scale its intensities to [0, 1] by the 1st and 99th percentiles over all frames (one scale for the whole
   slice, so brightness stays constant over time as the flow assumes).
2. Track: TV-L1 optical flow (scikit-image `optical_flow_tvl1`; Zach, Pock & Bischof 2007) from the ED frame
   directly to every other frame, with ED as the reference image, so the flow at ED pixel X is the Lagrangian
   displacement u(X, t) of the material point that sits at X at ED: it lies at X + u in frame t. Tracking frame to
   frame and composing the steps was not chosen: TV regularisation shrinks displacement gradients by an amount,
   not a fraction, so the small steps lose relatively more and the errors add up along the trajectory; ED -> frame
   keeps each estimate independent. Flow settings (TVL1_OPTIONS): attachment 45, tightness 0.3, 5 warps of 5
   iterations. On textured thickening rings (1.1-1.6 mm pixels, noise 4-11 % of the wall's signal) attachment 30
   left peak E_rr 0.04-0.06 below the truth and 60 made E_cc noisy; 10, 20 or 30 iterations moved the peaks by
   <= 0.005 (E_cc) and 0.012 (E_rr) in no consistent direction, at 2-6 times the time; 3 warps lost part of a
   rigid rotation of 8-10 degrees (apparent E_cc up to 0.026).
3. Differentiate: grad u = du_i/dX_j (physical pixel spacing; rows and columns may differ) by a weighted local
   linear fit of u (mm) over myocardium pixels only (Gaussian weights, sigma 1 pixel, 5 x 5 window): at the core
   voxels (see below) over the core's pixels, at the edge pixels over the whole ED myocardium. The blood pool's
   and the edge's flow so never enter the core's gradient, and noise in the flow biases the quadratic term of E
   less: with plain central differences the peak E_cc error doubled (0.014-0.033 instead of 0.008-0.016 on rings
   with noise 4-11 % of the wall's signal).
4. Strain: deformation gradient F = I + grad u, Green-Lagrange E = 1/2 (F^T F - I) (Holzapfel, Nonlinear Solid
   Mechanics, 2000, ch. 2), projected on the radial unit vector e_r (from the LV centre of the slice at ED to
   the material point at ED) and the circumferential e_c (e_r turned by 90 degrees in the slice plane):
   E_rr = e_r^T E e_r, E_cc = e_c^T E e_c. These are the radial and circumferential directions of the
   EACVI/ASE/industry strain standardisation (Voigt et al., Eur Heart J Cardiovasc Imaging 2015); values are
   fractions, negative for shortening (E_cc) and positive for thickening (E_rr). A rigid motion gives E = 0.
   LV centre: the centroid of the ED blood pool when given, else of the ED myocardium with its cavity filled.

Maps lie on the ED (Lagrangian, reference) grid: the value at an ED myocardium voxel at frame t is the strain of the
material point that was there at ED, wherever it has moved; voxels outside the ED myocardium are NaN. A global
value of a frame is the mean over the ED myocardium eroded by one pixel in each slice (the "core"), i.e. over the
same material points at every frame, as the myocardium is carried along by the motion; the outermost pixels are
left out because their flow mixes wall and blood or fat (DESIGN, "Facts measured"). Peaks are the extreme over
frames: the minimum of E_cc and the maximum of E_rr. AHA segments (`analysis.aha`, anchored at an RV mask or the RV
insertion points) average the same core voxels; without an anchor no segment is reported.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.ndimage import binary_erosion, binary_fill_holes, correlate
from skimage.registration import optical_flow_tvl1

from ..errors import InputError
from ..io.writing import atomic_write_bytes, check_output_paths
from ..progress import Progress, report
from ..volume import Volume
from .aha import AHA_SEGMENTS, AhaSegmentation, aha_segments, level_of_segment
from .bullseye import write_bullseye_png

TVL1_OPTIONS: dict[str, float | int] = {"attachment": 45.0, "tightness": 0.3, "num_iter": 5, "num_warp": 5}
"""scikit-image optical_flow_tvl1 settings used for tracking (see the module docstring)."""
TRACKING_THREADS = min(4, os.cpu_count() or 1)
"""Threads computing the frames' flows of one slice at once (same result for any count)."""
THREADED_MIN_PIXELS = 96 * 96
"""Frames of fewer pixels are tracked one after another: on 2 cores (benchmarks/strain.py) threads cut a 120 x 120
crop from 2.1 to 1.7-1.9 s but slow a 64 x 64 crop from 0.65 to 0.95 s (too little array work per GIL release)."""
MARGIN_MM = 15.0
GRADIENT_SIGMA_PX = 1.0
STRAIN_UNITS = "1"  # a fraction: Green-Lagrange strain is dimensionless
ES_FROM_STRAIN = "frame of peak global circumferential shortening"


# --- one slice: arrays ----------------------------------------------------------------------------------------


def normalise_intensity(frames: np.ndarray) -> np.ndarray:
    """Frames (t, rows, cols) scaled to [0, 1] float32 by their 1st and 99th percentiles over all frames together
    (values beyond are clipped). A constant slice becomes zeros."""
    frames = np.asarray(frames, dtype=np.float32)
    low, high = np.percentile(frames, (1.0, 99.0))
    if high <= low:
        return np.zeros_like(frames)
    return np.clip((frames - low) / (high - low), 0.0, 1.0)


def lagrangian_displacement(frames: np.ndarray, ed_frame: int = 0, *,
                            on_frame: Callable[[int], None] | None = None, threads: int | None = None) -> np.ndarray:
    """Displacement of every ED pixel to every frame, by TV-L1 optical flow from the ED frame (TVL1_OPTIONS).

    frames: (t, rows, cols) images of one slice, ideally `normalise_intensity`d. Returns (t, 2, rows, cols) float32
    in pixels, components (row, col): the material point at ED pixel X lies at X + u[t, :, X] in frame t; u[ed] = 0.
    on_frame(t) is called after each frame's flow, in frame order (for progress; it may raise to stop). threads:
    how many frames are tracked at once (None: TRACKING_THREADS for frames of THREADED_MIN_PIXELS or more, else 1);
    the result does not depend on it.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise InputError(f"tracking needs frames (t, rows, cols) with t >= 2; got shape {frames.shape}")
    if not 0 <= ed_frame < frames.shape[0]:
        raise InputError(f"ED frame {ed_frame} is outside the {frames.shape[0]} frames (0-{frames.shape[0] - 1})")
    displacement = np.zeros((frames.shape[0], 2, *frames.shape[1:]), dtype=np.float32)

    def track(t: int) -> np.ndarray:
        return optical_flow_tvl1(frames[ed_frame], frames[t], **TVL1_OPTIONS) if t != ed_frame else displacement[t]

    # The frames' flows are independent; numpy releases the GIL in their array work, so a few threads shorten the
    # wall time (benchmarks/strain.py) without changing a value.
    if threads is None:
        threads = TRACKING_THREADS if frames[0].size >= THREADED_MIN_PIXELS else 1
    executor = ThreadPoolExecutor(max_workers=threads)
    try:
        for t, flow in enumerate(executor.map(track, range(frames.shape[0]))):
            displacement[t] = flow
            if on_frame is not None:
                on_frame(t)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return displacement


def displacement_gradient(displacement_mm: np.ndarray, mask: np.ndarray, spacing: Sequence[float], *,
                          sigma_px: float = GRADIENT_SIGMA_PX) -> np.ndarray:
    """Spatial gradient of a displacement field by a weighted local linear fit over the pixels of `mask`.

    displacement_mm: (..., 2, rows, cols) components (row, col) in mm. mask: (rows, cols) bool, the pixels whose
    values are used and where the gradient is returned. spacing: (row, col) pixel size in mm. At each mask pixel
    u(X') ~ a + G (X' - X) is fitted by least squares over the mask pixels X' within 2 sigma (Gaussian weights of
    `sigma_px`), which is exact for linear fields. Returns (..., 2, 2, rows, cols) float64 with H[i, j] = du_i/dX_j
    (i, j in (row, col) order, dimensionless); NaN outside the mask and where the mask pixels around do not span
    two dimensions (a line one pixel wide).
    """
    displacement_mm = np.asarray(displacement_mm, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if displacement_mm.shape[-3:] != (2, *mask.shape):
        raise InputError(f"displacement of shape {displacement_mm.shape} does not fit a mask of shape {mask.shape}; "
                         "expected (..., 2, rows, cols)")
    row_mm, col_mm = (float(v) for v in spacing)
    radius = max(1, math.ceil(2.0 * sigma_px))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    d_row, d_col = np.meshgrid(offsets * row_mm, offsets * col_mm, indexing="ij")
    weight = np.exp(-0.5 * (offsets[:, None] ** 2 + offsets[None, :] ** 2) / sigma_px**2)
    kernels = (weight, weight * d_row, weight * d_col)  # moments 1, dr, dc

    def moment(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        return correlate(image, kernel.reshape((1,) * (image.ndim - 2) + kernel.shape), mode="constant")

    m = mask.astype(np.float64)
    s0, sr, sc = (moment(m, kernel) for kernel in kernels)
    srr, src, scc = (moment(m, kernel) for kernel in (weight * d_row**2, weight * d_row * d_col, weight * d_col**2))
    normal = np.stack([np.stack([s0, sr, sc], -1), np.stack([sr, srr, src], -1), np.stack([sc, src, scc], -1)], -2)
    with np.errstate(divide="ignore", invalid="ignore"):  # empty windows are outside the mask and left NaN
        spread = (srr / s0 - (sr / s0) ** 2) * (scc / s0 - (sc / s0) ** 2) - (src / s0 - sr * sc / s0**2) ** 2
    usable = mask & (s0 > 0) & (spread > 0.01 * (row_mm * col_mm) ** 2)  # positions spread >= ~0.3 px along each axis
    inverse = np.linalg.inv(normal[usable])  # (n, 3, 3)
    weighted = displacement_mm * m
    right = np.stack([moment(weighted, kernel)[..., usable] for kernel in kernels], -1)  # (..., 2, n, 3)
    fit = np.einsum("nab,...nb->...na", inverse, right)  # (..., 2, n, 3): a, du/dr, du/dc
    gradient = np.full((*displacement_mm.shape[:-2], 2, *mask.shape), np.nan)
    gradient[..., usable] = np.moveaxis(fit[..., 1:], -1, -2)
    return gradient


def green_lagrange(gradient: np.ndarray) -> np.ndarray:
    """Green-Lagrange strain E = 1/2 (F^T F - I) with F = I + H, i.e. 1/2 (H + H^T + H^T H).

    gradient: H, (..., 2, 2, rows, cols) with H[i, j] = du_i/dX_j. Returns E of the same shape (symmetric in i, j).
    """
    gradient = np.asarray(gradient)
    return 0.5 * (gradient + np.swapaxes(gradient, -4, -3) + np.einsum("...kirc,...kjrc->...ijrc", gradient, gradient))


def radial_circumferential_directions(shape: Sequence[int], centre_px: Sequence[float], spacing: Sequence[float]
                                      ) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors e_r (from the centre to each pixel) and e_c (e_r turned by 90 degrees) over a (rows, cols) grid,
    components in (row, col) order in physical space: two (2, rows, cols) arrays; NaN at the centre itself.
    centre_px: (row, col) in pixels (fractions allowed); spacing: (row, col) pixel size in mm."""
    row_mm = (np.arange(shape[0]) - centre_px[0])[:, None] * spacing[0]
    col_mm = (np.arange(shape[1]) - centre_px[1])[None, :] * spacing[1]
    distance = np.hypot(row_mm, col_mm)
    with np.errstate(divide="ignore", invalid="ignore"):
        radial = np.stack(np.broadcast_arrays(row_mm / distance, col_mm / distance))
    return radial, np.stack([-radial[1], radial[0]])


def radial_circumferential(strain: np.ndarray, centre_px: Sequence[float], spacing: Sequence[float]
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Project a strain tensor field on the radial and circumferential directions about a centre.

    strain: (..., 2, 2, rows, cols), components in (row, col) order on the reference grid. centre_px: (row, col) of
    the LV centre in pixels of that grid (fractions allowed); spacing: (row, col) pixel size in mm. e_r points from
    the centre to each pixel, e_c is e_r turned by 90 degrees (the sign of e_c does not change E_cc). Returns
    (E_rr, E_cc), each (..., rows, cols); NaN at the centre itself.
    """
    strain = np.asarray(strain)
    radial, circumferential = radial_circumferential_directions(strain.shape[-2:], centre_px, spacing)

    def project(direction: np.ndarray) -> np.ndarray:
        return np.einsum("irc,...ijrc,jrc->...rc", direction, strain, direction)

    return project(radial), project(circumferential)


def lv_centre(myocardium: np.ndarray, blood_pool: np.ndarray | None = None) -> tuple[float, float]:
    """(row, col) in pixels of the LV centre of one slice: the centroid of `blood_pool` when it selects pixels,
    else of the myocardium with its enclosed cavity filled (for an open ring, of the ring itself)."""
    region = np.asarray(blood_pool, dtype=bool) if blood_pool is not None else None
    if region is None or not region.any():
        region = binary_fill_holes(np.asarray(myocardium, dtype=bool))
    if not region.any():
        raise InputError("the slice has no myocardium to find the LV centre from")
    rows, cols = np.nonzero(region)
    return float(rows.mean()), float(cols.mean())


def core_myocardium(myocardium: np.ndarray) -> np.ndarray:
    """The myocardium (..., rows, cols) eroded by one pixel (4-neighbourhood) in each slice: the voxels whose
    strain enters global and segment means."""
    myocardium = np.asarray(myocardium, dtype=bool)
    structure = np.zeros((3, 3), dtype=bool)
    structure[1, :] = structure[:, 1] = True
    return binary_erosion(myocardium, structure.reshape((1,) * (myocardium.ndim - 2) + (3, 3)))


def slice_strain(frames: np.ndarray, myocardium: np.ndarray, spacing: Sequence[float], *, ed_frame: int = 0,
                 blood_pool: np.ndarray | None = None, margin_mm: float = MARGIN_MM,
                 on_frame: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Radial and circumferential Green-Lagrange strain of one slice (see the module docstring for the method).

    frames: (t, rows, cols) cine images of the slice; myocardium: (rows, cols) bool ED myocardium; spacing: (row,
    col) pixel size in mm; blood_pool: optional (rows, cols) ED LV cavity (the centre). Returns (E_rr, E_cc), each
    (t, rows, cols) float32, at the ED positions of the material points, NaN outside the ED myocardium; zero at ED.
    on_frame(t) is called after each frame is tracked.
    """
    kinematics = slice_kinematics(frames, myocardium, spacing, ed_frame=ed_frame, blood_pool=blood_pool,
                                  margin_mm=margin_mm, on_frame=on_frame)
    return kinematics["radial_strain"], kinematics["circumferential_strain"]


def slice_kinematics(frames: np.ndarray, myocardium: np.ndarray, spacing: Sequence[float], *, ed_frame: int = 0,
                     blood_pool: np.ndarray | None = None, margin_mm: float = MARGIN_MM,
                     on_frame: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """`slice_strain`'s strains and, from the same tracking, the Lagrangian displacement projected on the radial and
    circumferential unit vectors (CPKDM, paper 000, eq. 2: the paper names these projections strains, but they are
    displacements): u_r = u . e_r (mm, positive outwards) and u_c = u . e_c (mm; e_c is e_r turned by +90 degrees
    in (row, col) order), e_r from the slice's LV centre at ED to the material point at ED.

    Arguments as `slice_strain`. Returns (t, rows, cols) float32 arrays "radial_strain", "circumferential_strain"
    (Green-Lagrange, fractions), "radial_displacement_mm", "circumferential_displacement_mm", all on the ED grid, NaN
    outside the ED myocardium, zero at ED. InputError for mismatched shapes or no ED myocardium.
    """
    frames = np.asarray(frames)
    myocardium = np.asarray(myocardium, dtype=bool)
    if frames.ndim != 3 or frames.shape[1:] != myocardium.shape:
        raise InputError(f"frames {frames.shape} and myocardium {myocardium.shape} do not fit: expected "
                         "(t, rows, cols) and (rows, cols)")
    if not myocardium.any():
        raise InputError("the slice has no ED myocardium")
    centre = lv_centre(myocardium, blood_pool)
    rows, cols = np.nonzero(myocardium)
    pad = [math.ceil(margin_mm / float(step)) for step in spacing]
    r0, r1 = max(0, rows.min() - pad[0]), min(myocardium.shape[0], rows.max() + pad[0] + 1)
    c0, c1 = max(0, cols.min() - pad[1]), min(myocardium.shape[1], cols.max() + pad[1] + 1)
    crop = myocardium[r0:r1, c0:c1]

    pixels = lagrangian_displacement(normalise_intensity(frames[:, r0:r1, c0:c1]), ed_frame, on_frame=on_frame)
    millimetres = pixels * np.asarray(spacing, dtype=np.float32)[:, None, None]
    gradient = displacement_gradient(millimetres, crop, spacing)
    inner = core_myocardium(crop)
    inner_gradient = displacement_gradient(millimetres, inner, spacing)
    fitted = np.isfinite(inner_gradient[(0,) * (inner_gradient.ndim - 2)])
    gradient[..., fitted] = inner_gradient[..., fitted]
    crop_centre = (centre[0] - r0, centre[1] - c0)
    radial_strain, circumferential_strain = radial_circumferential(green_lagrange(gradient), crop_centre, spacing)
    e_radial, e_circumferential = radial_circumferential_directions(crop.shape, crop_centre, spacing)
    crops = {"radial_strain": radial_strain, "circumferential_strain": circumferential_strain,
             "radial_displacement_mm": np.einsum("irc,tirc->trc", e_radial, millimetres),
             "circumferential_displacement_mm": np.einsum("irc,tirc->trc", e_circumferential, millimetres)}
    maps = {}
    for name, values in crops.items():
        maps[name] = np.full(frames.shape, np.nan, dtype=np.float32)
        maps[name][:, r0:r1, c0:c1] = np.where(crop, values, np.nan)
    return maps


# --- a cine: Volumes ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class StrainResult:
    """Strain of a cine (see the module docstring for definitions; all strains are fractions).

    radial, circumferential: float32 Volumes (t, z, y, x) on the cine's grid, values of the material points at their
    ED voxel, NaN outside the ED myocardium. peak_radial (max over frames), peak_circumferential (min): (z, y, x).
    global_radial, global_circumferential: (t,) means over the core (ED myocardium eroded by one pixel).
    trigger_times_ms: (t,) or None. es_source: "user" or ES_FROM_STRAIN. segmentation: the AHA labels, or None
    without an RV anchor; segments: 16 rows (see `segment_curves`) or None. notes: what the reader should know.
    """

    radial: Volume
    circumferential: Volume
    peak_radial: Volume
    peak_circumferential: Volume
    global_radial: np.ndarray
    global_circumferential: np.ndarray
    trigger_times_ms: list[float] | None
    ed_frame: int
    es_frame: int
    es_source: str
    core_voxels: int
    segmentation: AhaSegmentation | None
    segments: list[dict] | None
    notes: list[str]

    @property
    def global_peak_radial(self) -> float:
        return float(np.max(self.global_radial))

    @property
    def global_peak_circumferential(self) -> float:
        return float(np.min(self.global_circumferential))

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: ED / ES frames, global peaks (with their frames) and end-systolic values, the global
        curves with the trigger times, the 16 segment rows (or None), the notes and the method's settings."""
        peak_cc, peak_rr = int(np.argmin(self.global_circumferential)), int(np.argmax(self.global_radial))
        return {
            "ed_frame": self.ed_frame, "es_frame": self.es_frame,
            "units": "fraction (Green-Lagrange strain; negative = shortening)",
            "global_peak_circumferential_strain": self.global_peak_circumferential,
            "global_peak_circumferential_frame": peak_cc,
            "global_peak_radial_strain": self.global_peak_radial, "global_peak_radial_frame": peak_rr,
            "global_circumferential_strain_at_es": float(self.global_circumferential[self.es_frame]),
            "global_radial_strain_at_es": float(self.global_radial[self.es_frame]),
            "core_voxels": self.core_voxels,
            "curves": {"frame": list(range(self.global_radial.size)), "trigger_time_ms": self.trigger_times_ms,
                       "global_circumferential": self.global_circumferential.tolist(),
                       "global_radial": self.global_radial.tolist()},
            "segments": self.segments,
            "notes": list(self.notes),
            "method": {"optical_flow": "scikit-image optical_flow_tvl1, ED -> each frame", **TVL1_OPTIONS,
                       "gradient": f"masked weighted local linear fit, sigma {GRADIENT_SIGMA_PX} px",
                       "global_mean_over": "ED myocardium eroded by 1 pixel per slice"},
        }


def myocardial_strain(cine: Volume, myocardium_ed: Volume | np.ndarray, *, ed_frame: int = 0,
                      es_frame: int | None = None, blood_pool_ed: Volume | np.ndarray | None = None,
                      rv_ed: Volume | np.ndarray | None = None,
                      insertion_points: Sequence[Sequence[float]] | None = None, base: str = "auto",
                      progress: Progress | None = None) -> StrainResult:
    """Radial and circumferential strain of a cine, with global and AHA-segment curves and peaks.

    cine: Volume (t, z, y, x) with t >= 2, metadata "trigger_times_ms" optional (t increasing values).
    myocardium_ed: LV myocardium mask (z, y, x) at the ED frame, on the cine's spatial grid. ed_frame: index of ED
    (default 0: the cine starts at the R wave). es_frame: index of ES for the end-systolic values; None: the frame
    of peak global circumferential shortening. blood_pool_ed: optional ED LV cavity mask (slice centres).
    rv_ed (RV mask at ED) or insertion_points ((2, 3) LPS mm): the AHA anchor; with neither, no segments (said in
    the notes). base: which stack end is the base for the AHA levels ("auto", "first", "last", see aha_segments).
    progress(fraction, message) may return False to cancel (raises Cancelled).

    Raises InputError (not a 4D cine, one frame, bad trigger times, NaN voxels, empty mask, ED / ES out of range,
    an RV mask and points both given) or GeometryError (a mask off the cine's grid).
    """
    frames = check_strain_inputs(cine, ed_frame, es_frame)
    myocardium = cine.mask_on_grid(myocardium_ed, "the ED myocardium mask", "the cine")
    blood = (cine.mask_on_grid(blood_pool_ed, "the ED blood-pool mask", "the cine", allow_empty=True)
             if blood_pool_ed is not None else None)
    if rv_ed is not None and insertion_points is not None:
        raise InputError("give either an RV mask or the RV insertion points for the AHA segments, not both")
    reference = Volume(myocardium.astype(np.uint8), cine.spacing, cine.origin, cine.direction)
    notes: list[str] = []
    segmentation = None
    if rv_ed is not None or insertion_points is not None:
        segmentation = aha_segments(reference, blood_pool=blood, rv=rv_ed, insertion_points_lps=insertion_points,
                                    base=base, allow_missing=True)
        if segmentation.missing:
            notes.append(f"AHA segment(s) {', '.join(map(str, segmentation.missing))} have no myocardium in the "
                         "ED mask (the cine does not cover them)")
    else:
        notes.append("AHA segments not computed: no RV mask or RV insertion points were given")
    core = core_myocardium(myocardium)
    if not core.any():
        raise InputError("the ED myocardium mask is nowhere thicker than 2 pixels, so no voxel is left for the "
                         "strain means once its edge pixels are left out; check the mask")

    array = cine.array.astype(np.float32)
    spacing = (cine.spacing[1], cine.spacing[0])  # (row, col) mm
    slices = [z for z in range(myocardium.shape[0]) if myocardium[z].any()]
    radial = np.full(array.shape, np.nan, dtype=np.float32)
    circumferential = np.full(array.shape, np.nan, dtype=np.float32)
    steps = len(slices) * frames
    report(progress, 0.0, "tracking the myocardium")
    for index, z in enumerate(slices):
        def on_frame(t: int, index: int = index, z: int = z) -> None:
            report(progress, (index * frames + t + 1) / steps, f"tracking slice {z + 1}, frame {t + 1}/{frames}")

        radial[:, z], circumferential[:, z] = slice_strain(
            array[:, z], myocardium[z], spacing, ed_frame=ed_frame, blood_pool=None if blood is None else blood[z],
            on_frame=on_frame)

    global_radial = _mean(radial[:, core])
    global_circumferential = _mean(circumferential[:, core])
    if es_frame is None:
        es_frame, es_source = int(np.argmin(global_circumferential)), ES_FROM_STRAIN
        notes.append(f"ES taken as the {ES_FROM_STRAIN} (frame {es_frame})")
    else:
        es_source = "user"
    times = cine.metadata.get("trigger_times_ms")
    times = [float(v) for v in times] if times is not None else None

    def volume(values: np.ndarray, quantity: str) -> Volume:
        metadata = {"quantity": quantity, "units": STRAIN_UNITS, "ed_frame": ed_frame}
        if values.ndim == 4 and times is not None:
            metadata["trigger_times_ms"] = times
        return Volume(values, cine.spacing, cine.origin, cine.direction, metadata)

    with np.errstate(all="ignore"):  # all-NaN voxels outside the myocardium stay NaN
        peak_radial, peak_circumferential = np.fmax.reduce(radial, axis=0), np.fmin.reduce(circumferential, axis=0)
    segments = (segment_curves(segmentation, radial, circumferential, core) if segmentation is not None else None)
    return StrainResult(
        radial=volume(radial, "radial_strain"), circumferential=volume(circumferential, "circumferential_strain"),
        peak_radial=volume(peak_radial, "peak_radial_strain"),
        peak_circumferential=volume(peak_circumferential, "peak_circumferential_strain"),
        global_radial=global_radial, global_circumferential=global_circumferential, trigger_times_ms=times,
        ed_frame=ed_frame, es_frame=es_frame, es_source=es_source, core_voxels=int(core.sum()),
        segmentation=segmentation, segments=segments, notes=notes)


def segment_curves(segmentation: AhaSegmentation, radial: np.ndarray, circumferential: np.ndarray,
                   core: np.ndarray) -> list[dict]:
    """Per-AHA-segment strain curves and peaks.

    radial, circumferential: (t, z, y, x) strain maps on the segmentation's grid; core: (z, y, x) bool, the voxels
    averaged (the eroded ED myocardium). Returns 16 rows in segment order: "segment", "name", "level", "n" (core
    voxels), "missing" (True when n is 0, with None values), "radial_curve", "circumferential_curve" ((t,) means),
    "peak_radial" (max of the curve), "peak_circumferential" (min), "peak_radial_frame", "peak_circumferential_frame".
    """
    labels = segmentation.labels.array
    rows = []
    for segment, name in enumerate(AHA_SEGMENTS, start=1):
        selected = core & (labels == segment)
        row: dict[str, Any] = {"segment": segment, "name": name, "level": level_of_segment(segment),
                               "n": int(selected.sum()), "missing": not selected.any(), "radial_curve": None,
                               "circumferential_curve": None, "peak_radial": None, "peak_circumferential": None,
                               "peak_radial_frame": None, "peak_circumferential_frame": None}
        if selected.any():
            rr, cc = _mean(radial[:, selected]), _mean(circumferential[:, selected])
            row.update(radial_curve=rr.tolist(), circumferential_curve=cc.tolist(), peak_radial=float(rr.max()),
                       peak_circumferential=float(cc.min()), peak_radial_frame=int(rr.argmax()),
                       peak_circumferential_frame=int(cc.argmin()))
        rows.append(row)
    return rows


def check_strain_inputs(cine: Volume, ed_frame: int, es_frame: int | None = None) -> int:
    """Check what strain needs of a cine and the ED / ES indices; returns the number of frames.

    Raises InputError naming the fault: not 4D (t, z, y, x), fewer than 2 frames, trigger times that are not one
    finite, increasing value per frame, NaN / infinite / complex voxels, ED or ES not an index of a frame, ED = ES.
    """
    shape = cine.array.shape
    if cine.array.ndim != 4:
        raise InputError(f"{cine.named('the cine')} has shape {shape} (z, y, x): a cine needs a time axis (t, z, y, x); "
                         "give the whole cine (a 4D file or a DICOM cine series), not one frame or a 3D stack")
    frames = shape[0]
    if frames < 2:
        raise InputError(f"{cine.named('the cine')} has one frame; strain needs the motion between at least 2 frames")
    times = cine.metadata.get("trigger_times_ms")
    if times is not None:
        times = np.asarray(times, dtype=float)
        if times.shape != (frames,) or not np.isfinite(times).all() or np.any(np.diff(times) <= 0):
            raise InputError(f"{cine.named('the cine')}: its trigger times {times.tolist()} are not one finite, "
                             f"increasing value for each of its {frames} frames")
    cine.require_finite("the cine")
    for name, index in (("ED", ed_frame), ("ES", es_frame)):
        if index is None:
            continue
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < frames:
            raise InputError(f"the {name} frame {index!r} is not a frame of the cine: give an index from 0 to "
                             f"{frames - 1}")
    if es_frame is not None and es_frame == ed_frame:
        raise InputError(f"ED and ES are the same frame ({ed_frame}): strain is the deformation from ED to the other "
                         "frames, so ES must be another frame")
    return frames


def _mean(values: np.ndarray) -> np.ndarray:
    """Mean over voxels (t, n) -> (t,) float64, ignoring the NaN of voxels whose gradient could not be fitted."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a frame without any fitted voxel stays NaN
        return np.nanmean(values.astype(np.float64), axis=1)


# --- figures --------------------------------------------------------------------------------------------------


def curves_figure(result: StrainResult) -> Figure:
    """Global circumferential and radial strain (%) against trigger time (frame number without times), ED and ES
    marked, the AHA segments' circumferential curves in thin grey when there are segments."""
    frames = result.global_radial.size
    x = np.asarray(result.trigger_times_ms if result.trigger_times_ms is not None else range(frames), dtype=float)
    figure = Figure(figsize=(7.0, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for row in result.segments or []:
        if not row["missing"]:
            axes.plot(x, 100.0 * np.asarray(row["circumferential_curve"]), color="0.8", linewidth=0.8)
    axes.plot(x, 100.0 * result.global_circumferential, color="tab:blue", linewidth=2.0,
              label=f"circumferential (peak {100.0 * result.global_peak_circumferential:.1f} %)")
    axes.plot(x, 100.0 * result.global_radial, color="tab:red", linewidth=2.0,
              label=f"radial (peak {100.0 * result.global_peak_radial:.1f} %)")
    for frame, name in ((result.ed_frame, "ED"), (result.es_frame, "ES")):
        axes.axvline(x[frame], color="0.4", linestyle="--", linewidth=1.0)
        axes.annotate(name, (x[frame], 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                      textcoords="offset points", color="0.3")
    axes.axhline(0.0, color="black", linewidth=0.6)
    axes.set_xlabel("trigger time (ms)" if result.trigger_times_ms is not None else "frame")
    axes.set_ylabel("Green-Lagrange strain (%)")
    axes.set_title("Global myocardial strain" + (" (grey: AHA segments, circumferential)" if result.segments else ""),
                   fontsize=11)
    axes.legend(loc="best", fontsize=9)
    figure.tight_layout()
    return figure


def write_strain_figures(result: StrainResult, curves_path: str | Path, bullseye_path: str | Path | None = None, *,
                         protected: Iterable[str | Path] = ()) -> list[Path]:
    """Write `curves_figure` and, with `bullseye_path`, the bullseye of peak circumferential strain per AHA segment
    (in %, colour map vik centred on 0) as PNGs, each atomically, never over a `protected` input. Raises InputError
    for a bullseye without segments."""
    check_output_paths([path for path in (curves_path, bullseye_path) if path is not None], protected=protected,
                       images=False)
    buffer = io.BytesIO()
    curves_figure(result).savefig(buffer, format="png", dpi=150)
    written = [atomic_write_bytes(curves_path, buffer.getvalue())]
    if bullseye_path is not None:
        if result.segments is None:
            raise InputError("no AHA segments to draw a bullseye from: give an RV mask or the RV insertion points")
        rows = [{"segment": row["segment"], "peak": None if row["missing"] else 100.0 * row["peak_circumferential"]}
                for row in result.segments]
        written.append(write_bullseye_png(rows, bullseye_path, protected=protected,
                                          quantity="peak_circumferential_strain", value="peak",
                                          title="Peak circumferential strain (%), AHA segments"))
    return written

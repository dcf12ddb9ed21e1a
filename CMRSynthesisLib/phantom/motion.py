"""Cardiac motion of a synthetic subject: the LV's material mapping over the cycle, labelmaps at any phase, and the
ground truth for strain (Lagrangian displacement and Green-Lagrange strain of the end-diastolic myocardium).

The LV wall moves radially about the slice's fixed LV centre and rotates rigidly per slice (torsion). A material point
at end-diastolic polar position (R, theta) moves to radius r = sqrt(R^2 + D(theta)) and angle theta + phi, with
D = -EF c (1 - d(theta)) r_endo_ED(theta)^2 <= 0: c in [0, 1] is the contraction of the phase, EF the fraction of
cavity area ejected, d the infarct's loss of motion (0 remote, up to 1 akinetic at a transmural infarct's centre).
The mapping keeps every area element (r dr = R dR at fixed theta): the myocardium is incompressible in plane, so the
wall thickens where the cavity shrinks. Its deformation gradient in the polar basis is
F = [[R/r, D'(theta) / (2 r R)], [0, r/R]], so the Green-Lagrange strain E = 1/2 (F^T F - I) is
E_rr = 1/2 ((R/r)^2 - 1) (radial, thickening > 0) and E_cc = 1/2 ((D' / (2 r R))^2 + (r/R)^2 - 1) (circumferential,
shortening < 0). The RV contracts by scaling; the surroundings do not move.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .anatomy import (
    LABELS,
    Subject,
    in_plane_mm,
    lv_centre_mm,
    lv_radii_ed,
    paint_thorax,
    rv_regions,
    scar_profile,
    slice_depths_mm,
)

DIASTASIS_CONTRACTION = 0.15  # the LV refills to 85 % by diastasis; atrial contraction completes the filling
ATRIAL_KICK_START = 0.8  # fraction of the RR interval where atrial contraction begins


def contraction(phase: float, end_systole_phase: float) -> float:
    """Contraction c in [0, 1] at cardiac `phase` in [0, 1): 0 at end-diastole (phase 0), 1 at end-systole, rapid
    filling to the diastasis level, then the atrial kick back to 0 at the next R wave."""
    es = end_systole_phase
    if phase <= es:
        return math.sin(0.5 * math.pi * phase / es) ** 2
    if phase <= 2 * es:
        return DIASTASIS_CONTRACTION + (1.0 - DIASTASIS_CONTRACTION) * math.cos(0.5 * math.pi * (phase - es) / es) ** 2
    if phase <= ATRIAL_KICK_START:
        return DIASTASIS_CONTRACTION
    return DIASTASIS_CONTRACTION * math.cos(0.5 * math.pi * (phase - ATRIAL_KICK_START) / (1 - ATRIAL_KICK_START)) ** 2


def cine_phases(subject: Subject) -> np.ndarray:
    """(t,) cardiac phase of each cine frame: k / frames, frame 0 at the R wave (end-diastole)."""
    frames = subject.acquisition.cine_frames
    return np.arange(frames) / frames


def cine_trigger_times_ms(subject: Subject) -> np.ndarray:
    """(t,) trigger time of each cine frame in ms after the R wave."""
    return cine_phases(subject) * subject.acquisition.rr_interval_ms


def render_labels(subject: Subject, phase: float = 0.0) -> Volume:
    """uint8 labelmap (z, y, x) of `subject` at cardiac `phase` in [0, 1) (0 = end-diastole); values in LABELS.

    Raises InputError for a phase outside [0, 1).
    """
    if not 0.0 <= phase < 1.0:
        raise InputError(f"cardiac phase must lie in [0, 1); got {phase}")
    geometry, lv = subject.geometry, subject.lv
    c = contraction(phase, lv.end_systole_phase)
    x, y = in_plane_mm(geometry)
    cx, cy = lv_centre_mm(subject)
    dx, dy = x - cx, y - cy
    radius = np.hypot(dx, dy)
    theta = np.arctan2(-dy, dx)
    theta_ed = theta - _rotation(subject, c)
    r_in_ed, r_out_ed, shift = _lv_motion(subject, theta_ed, c)
    radius_ed = np.sqrt(np.maximum(radius**2 - shift, 0.0))
    r_out_now = np.sqrt(np.maximum(r_out_ed**2 + shift, 0.0))
    ring = np.broadcast_to(np.linspace(-np.pi, np.pi, 72, endpoint=False), (geometry.shape[0], 1, 72))
    _, ring_out, ring_shift = _lv_motion(subject, ring, c)
    mean_r_out = np.sqrt(np.maximum(ring_out**2 + ring_shift, 0.0)).mean(axis=-1, keepdims=True)

    relative_depth = slice_depths_mm(subject)[:, None, None] / lv.length_mm
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    paint_thorax(labels, subject.thorax, x, y, relative_depth)
    rv_cavity, rv_outer = rv_regions(subject.rv, dx, dy, relative_depth, mean_r_out, c)
    fat_width = subject.thorax.pericardial_fat_mm * 0.5 * (
        1 + np.cos(theta - math.radians(subject.thorax.pericardial_fat_angle_deg)))
    pericardium = (r_out_now > 0) & (radius < r_out_now + fat_width)
    pericardium |= rv_regions(subject.rv, dx, dy, relative_depth, mean_r_out, c, grow_mm=fat_width)[1]
    labels[pericardium] = LABELS["fat"]
    labels[rv_outer] = LABELS["rv_wall"]
    labels[rv_cavity] = LABELS["rv_blood"]
    wall = radius_ed < r_out_ed
    labels[wall] = LABELS["lv_myocardium"]
    labels[radius_ed < r_in_ed] = LABELS["lv_blood"]
    if subject.scar is not None:
        depth_in_wall = (radius_ed - r_in_ed) / np.maximum(r_out_ed - r_in_ed, 1e-6)
        in_scar = depth_in_wall <= subject.scar.transmurality * scar_profile(subject.scar, theta_ed)
        labels[wall & (radius_ed >= r_in_ed) & in_scar] = LABELS["scar"]
    return geometry.volume(labels, phantom_subject=subject.subject_id, cardiac_phase=float(phase), units="label")


def material_positions_mm(subject: Subject, phase: float) -> tuple[np.ndarray, np.ndarray]:
    """End-diastolic in-plane position (x, y), each (z, y, x) in mm from the image centre, of the LV tissue seen at
    every voxel at `phase` (the inverse of the motion; voxels outside the LV keep their own position)."""
    c = contraction(phase, subject.lv.end_systole_phase)
    x, y = in_plane_mm(subject.geometry)
    cx, cy = lv_centre_mm(subject)
    dx, dy = np.broadcast_arrays(x - cx, y - cy)
    theta_ed = np.arctan2(-dy, dx) - _rotation(subject, c)
    _, r_out_ed, shift = _lv_motion(subject, theta_ed, c)
    radius_ed = np.sqrt(np.maximum(dx**2 + dy**2 - shift, 0.0))
    inside = radius_ed < r_out_ed
    x_ed = np.where(inside, cx + radius_ed * np.cos(theta_ed), x)
    y_ed = np.where(inside, cy - radius_ed * np.sin(theta_ed), y)
    return x_ed, y_ed


def lagrangian_displacement_mm(subject: Subject, phases: np.ndarray, wall_ed: np.ndarray) -> np.ndarray:
    """(t, 2, z, y, x) float32 in-plane displacement (mm; component 0 along the image columns (x), 1 along the rows
    (y)) from end-diastole to each phase of every voxel of the end-diastolic LV wall `wall_ed` (z, y, x); NaN elsewhere."""
    radius, theta, dx, dy = _ed_polar(subject)
    out = np.full((len(phases), 2, *subject.geometry.shape), np.nan, dtype=np.float32)
    for k, phase in enumerate(phases):
        c = contraction(float(phase), subject.lv.end_systole_phase)
        _, _, shift = _lv_motion(subject, theta, c)
        radius_now = np.sqrt(np.maximum(radius**2 + shift, 0.0))
        theta_now = theta + _rotation(subject, c)
        out[k, 0] = np.where(wall_ed, radius_now * np.cos(theta_now) - dx, np.nan)
        out[k, 1] = np.where(wall_ed, -radius_now * np.sin(theta_now) - dy, np.nan)
    return out


def true_strain(subject: Subject, phases: np.ndarray, wall_ed: np.ndarray) -> dict[str, np.ndarray]:
    """Green-Lagrange strain of the end-diastolic LV wall `wall_ed` (z, y, x) at each phase, in closed form (module
    docstring): {"radial": (t, z, y, x), "circumferential": (t, z, y, x)} as fractions, NaN outside the wall."""
    radius, theta, _, _ = _ed_polar(subject)
    step = 1e-3
    radial = np.full((len(phases), *subject.geometry.shape), np.nan, dtype=np.float32)
    circumferential = np.full_like(radial, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, phase in enumerate(phases):
            c = contraction(float(phase), subject.lv.end_systole_phase)
            shift = _lv_motion(subject, theta, c)[2]
            slope = (_lv_motion(subject, theta + step, c)[2] - _lv_motion(subject, theta - step, c)[2]) / (2 * step)
            radius_now = np.sqrt(np.maximum(radius**2 + shift, 1e-12))
            stretch = radius_now / np.maximum(radius, 1e-6)
            shear = slope / (2 * radius_now * np.maximum(radius, 1e-6))
            radial[k] = np.where(wall_ed, 0.5 * (stretch**-2 - 1.0), np.nan)
            circumferential[k] = np.where(wall_ed, 0.5 * (shear**2 + stretch**2 - 1.0), np.nan)
    return {"radial": radial, "circumferential": circumferential}


def _ed_polar(subject: Subject) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Radius, angle, dx and dy (each (z, y, x)) of every voxel about its slice's LV centre at end-diastole."""
    x, y = in_plane_mm(subject.geometry)
    cx, cy = lv_centre_mm(subject)
    dx, dy = np.broadcast_arrays(x - cx, y - cy)
    return np.hypot(dx, dy), np.arctan2(-dy, dx), dx, dy


def _rotation(subject: Subject, c: float) -> np.ndarray:
    """(z, 1, 1) rigid in-plane rotation (rad, counter-clockwise on screen) of each slice at contraction c: apical
    slices turn one way and basal slices the other, torsion_deg apart at end-systole."""
    relative_depth = slice_depths_mm(subject)[:, None, None] / subject.lv.length_mm
    return np.radians(subject.lv.torsion_deg) * c * (relative_depth - 0.4)


def _lv_motion(subject: Subject, theta_ed: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """End-diastolic endo- and epicardial radii (mm) at end-diastolic angle `theta_ed` ((z, ...) rad) and the radial
    shift D = r^2 - R^2 (mm^2, <= 0) of the tissue there at contraction c (module docstring)."""
    depth = slice_depths_mm(subject)[:, None, None]
    r_in, r_out = lv_radii_ed(subject.lv, theta_ed, depth)
    dysfunction = subject.scar.dysfunction * scar_profile(subject.scar, theta_ed) if subject.scar else 0.0
    shift = -subject.lv.ejection_fraction * c * (1.0 - dysfunction) * r_in**2
    return r_in, r_out, shift

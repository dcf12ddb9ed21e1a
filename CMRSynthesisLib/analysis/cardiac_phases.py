"""End-diastole and end-systole from the LV blood-pool volume curve of a cine.

ED is the frame of largest LV cavity volume and ES the frame of smallest (the volumetric definition used by the
SCMR post-processing recommendations, Schulz-Menger et al., J Cardiovasc Magn Reson 2020), not the ECG: a cine
need not start at the R wave.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

LV_BLOOD_LABEL = 1  # as the cine segmenter writes it: 1 LV blood, 2 LV myocardium, 3 RV blood


def blood_pool_volumes_ml(labels: np.ndarray, spacing: Sequence[float], *, label: int = LV_BLOOD_LABEL) -> np.ndarray:
    """LV blood-pool volume of each frame in mL (voxel count x voxel volume).

    labels: (t, z, y, x) integer label maps of a cine; spacing: (sx, sy, sz) voxel size in mm, as Volume.spacing
    (sz the slice spacing, so gaps between slices count as cavity, as in the summation-of-discs method); label: the
    LV blood value. Returns (t,) float64. Raises InputError for a label array that is not 4D or a non-positive
    spacing.
    """
    labels = np.asarray(labels)
    if labels.ndim != 4:
        raise InputError(f"cine labels must be 4D (t, z, y, x); got shape {labels.shape}")
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"voxel spacing must be three positive sizes in mm (x, y, z); got {spacing.tolist()}")
    return (labels == label).sum(axis=(1, 2, 3)) * float(np.prod(spacing)) / 1000.0


def ed_es_frames(blood_volume_ml: Sequence[float]) -> tuple[int, int]:
    """(ED, ES) frame indices: the largest and the smallest LV blood-pool volume (the first frame of a tie).

    Raises InputError for fewer than two frames, non-finite or negative volumes, or a curve with no change (no LV
    blood pool found, or no motion), where ED and ES cannot be told apart.
    """
    curve = np.asarray(blood_volume_ml, dtype=float)
    if curve.ndim != 1 or curve.size < 2:
        raise InputError(f"ED and ES need a blood-pool volume for at least 2 frames; got {curve.size}")
    if not np.all(np.isfinite(curve)) or np.any(curve < 0):
        raise InputError(f"the blood-pool volume curve holds NaN, infinite or negative values: {curve.tolist()}")
    if curve.max() == curve.min():
        what = "no LV blood pool in any frame" if curve.max() == 0 else f"{curve[0]:.3g} mL in every frame"
        raise InputError(f"the LV blood-pool volume does not change over the cine ({what}), so ED and ES cannot be "
                         "found; check the segmentation, or give the ED and ES frames")
    return int(np.argmax(curve)), int(np.argmin(curve))

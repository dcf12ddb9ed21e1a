"""The per-slice inputs of virtual LGE (CPKDM, paper 000) on the LV crop, from a cine and a MOLLI series.

For one short-axis slice with an LV at ED:
- "cine" (phases, S, S): the cine resampled to `phases` phases over one heartbeat from ED (`preprocess.cycle_frames`)
  on the LV crop (`preprocess.LVCrop`), scaled together to [0, 1] by their CINE_PERCENTILES;
- "kinematics" (phases, 4, S, S): the slice's `analysis.kinematic_maps.kinematic_channels` (strains and eq. 2
  projected displacements from one tracking at the cine's own frames, from ED to every frame; the paper tracks
  adjacent frames, which accumulates errors along the cycle: `analysis.strain` explains the choice; ED myocardium and
  blood pool from the cine segmenter), resampled to the phases and cropped;
- "curves" (n, S, S): the MOLLI recovery curves on common inversion times (`analysis.relaxation`), brought onto the
  cine's slice by position (`slice_matching`), on the crop, clipped below at CURVE_FLOOR (noisy low-signal fits reach
  B/A of 4 and more, where tissue gives about 2); 0 where the MOLLI does not reach or the fit failed, with
  "covered" (S, S) saying where it has values (crop pixels wholly inside the covered area, so no covered pixel holds
  a curve blended with the 0 beyond it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..analysis.kinematic_maps import kinematic_channels
from ..errors import InputError
from ..preprocess import CINE_PERCENTILES, LVCrop, cycle_frames, percentile_normalise

CURVE_FLOOR = -2.0  # chosen: s(TI) = 1 - B/A exp(-TI/T1*) starts near -1.2 in tissue after a full inversion
FULLY_COVERED = 0.999  # a crop pixel is covered when the interpolated coverage reaches this


def slice_inputs(frames: np.ndarray, myocardium: np.ndarray, blood_pool: np.ndarray, curves: np.ndarray,
                 covered: np.ndarray, spacing_yx: Sequence[float], crop: LVCrop, ed_frame: int, phases: int,
                 kinematics: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The inputs of one slice on its crop (module docstring): "cine" (phases, S, S), "kinematics" (phases, 4, S, S),
    "curves" (n, S, S) and "covered" (S, S) bool. frames: the slice's cine (t, y, x); myocardium, blood_pool: ED
    masks (y, x); curves: (n, y, x) recovery curves on the cine's slice pixels; covered: (y, x) where they have
    values; kinematics: the slice's `kinematic_channels` (t, 4, y, x) when already computed (None: computed here).
    InputError for a slice without ED myocardium or a cine of fewer than 2 frames."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise InputError(f"virtual LGE needs a cine slice (t, y, x) of at least 2 frames; got shape {frames.shape}")
    if kinematics is None:
        kinematics = kinematic_channels(frames, myocardium, blood_pool, spacing_yx, ed_frame)
    return {"cine": percentile_normalise(crop.extract(cycle_frames(frames, ed_frame, phases)), *CINE_PERCENTILES),
            "kinematics": crop.extract(cycle_frames(kinematics, ed_frame, phases)),
            "curves": crop.extract(np.where(covered, np.maximum(curves, CURVE_FLOOR), 0.0)).astype(np.float32),
            "covered": crop.extract(covered.astype(np.float32)) >= FULLY_COVERED}

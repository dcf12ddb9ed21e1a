"""Network-ready kinematic maps of one short-axis slice: the myocardial strain and displacement of
`analysis.strain.slice_kinematics`, in a fixed channel order and on a common scale, for the methods that condition on
motion (virtual LGE's kinematic branch, T1Diff's morphokinetic condition).

Channels (KINEMATIC_CHANNELS): the radial and circumferential Green-Lagrange strains (fractions, clipped to
+-STRAIN_LIMIT: a few edge pixels of a tracked wall reach 3-12 where the flow mixes wall and blood, and no myocardium
strains that much) and the radial and circumferential projected displacements of CPKDM's eq. 2 (paper 000; divided by
DISPLACEMENT_SCALE_MM so all four are of order 0.1-1); 0 outside the ED myocardium.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .strain import slice_kinematics

KINEMATIC_CHANNELS = ("radial_strain", "circumferential_strain", "radial_displacement_mm",
                      "circumferential_displacement_mm")
DISPLACEMENT_SCALE_MM = 10.0  # chosen: wall displacements are a few mm, strains a few tenths
STRAIN_LIMIT = 1.5  # chosen: peak radial strain is 0.3-0.6, circumferential -0.15 to -0.25


def kinematic_channels(frames: np.ndarray, myocardium: np.ndarray, blood_pool: np.ndarray,
                       spacing_yx: Sequence[float], ed_frame: int) -> np.ndarray:
    """The four kinematic maps of one slice at every cine frame, from ED: (t, 4, y, x) float32 in KINEMATIC_CHANNELS
    order, strains clipped to +-STRAIN_LIMIT, displacements divided by DISPLACEMENT_SCALE_MM, 0 outside the ED
    myocardium. frames (t, y, x); myocardium and blood_pool (y, x) at ED; spacing_yx (row, col) mm. InputError as
    `slice_kinematics` (no ED myocardium, shapes)."""
    maps = slice_kinematics(frames, myocardium, spacing_yx, ed_frame=ed_frame, blood_pool=blood_pool)
    channels = [maps[name] / DISPLACEMENT_SCALE_MM if name.endswith("_mm")
                else np.clip(maps[name], -STRAIN_LIMIT, STRAIN_LIMIT) for name in KINEMATIC_CHANNELS]
    return np.nan_to_num(np.stack(channels, axis=1), nan=0.0).astype(np.float32)

"""T1 maps from a T1-mapping series: one vectorised fit per slice, results as Volumes on the source geometry."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..io.t1_series import T1Series
from ..progress import Progress, report
from ..volume import Volume
from .t1fit import MOLLI, SHMOLLI, detect_scheme, fit_t1

SCHEME_CHOICES = ("auto", MOLLI, SHMOLLI)
MAP_NAMES = ("t1", "a", "b", "t1_star", "r2", "failed")  # the outputs of t1_maps, in this order
_UNITS = {"t1": "ms", "t1_star": "ms", "a": "a.u.", "b": "a.u.", "r2": "1", "failed": "label"}


def t1_maps(series: T1Series, mask: Volume | None = None, *, scheme: str = "auto",
            t1_range_ms: tuple[float, float] | None = None, progress: Progress | None = None) -> dict[str, Volume]:
    """Fit every slice of `series` (inside `mask`, default everywhere).

    mask: a 3D Volume on the series' grid; non-zero voxels are fitted. scheme: "auto" recognises ShMOLLI from
    the acquisition order of the inversion times (a 5, 1, 1 pattern of inversions), else fits all samples
    together as MOLLI (also when the order is unknown: series.order_source None); "molli" / "shmolli" force it
    (InputError for "shmolli" when the order is unknown).
    Returns (z, y, x) Volumes named as MAP_NAMES: "t1" (float32 ms), "a", "b", "t1_star" (ms), "r2", and
    "failed" (uint8: 1 where the fit failed or T1 left the plausible range inside the mask). Metadata record
    the scheme of each slice, the inversion times and where they came from.
    """
    if scheme not in SCHEME_CHOICES:
        raise InputError(f"unknown T1-mapping scheme {scheme!r}; use one of {SCHEME_CHOICES}")
    if scheme == SHMOLLI and series.order_source is None:
        raise InputError(f"ShMOLLI needs the acquisition order of each slice's images (which inversion each image "
                         f"follows), and nothing in {series.images.describe_source()} tells it (no acquisition time, "
                         "instance number or multi-frame order); fit them as MOLLI, or give files that keep the order")
    reference = series.reference()
    selected = (np.ones(reference.spatial_shape, dtype=bool) if mask is None
                else reference.mask_on_grid(mask, "the mask", "the T1-mapping images"))
    maps = {name: np.zeros(reference.spatial_shape, dtype=np.uint8 if name == "failed" else np.float32)
            for name in MAP_NAMES}
    schemes = []
    for z in range(series.slices):
        order = np.argsort(series.acquisition_rank[:, z])  # images of slice z in acquisition order
        times = series.inversion_times_ms[order, z]
        detected, inversion_index = detect_scheme(times) if series.order_source else (MOLLI, None)
        chosen = detected if scheme == "auto" else scheme
        schemes.append(chosen)
        if not selected[z].any():
            continue
        options = {} if t1_range_ms is None else {"t1_range_ms": t1_range_ms}

        def slice_progress(fraction: float, message: str, z: int = z) -> bool | None:
            report(progress, (z + fraction) / series.slices, f"slice {z + 1}/{series.slices}: {message}")
            return True

        fit = fit_t1(series.images.array[order, z], times, selected[z], scheme=chosen,
                     inversion_index=inversion_index, progress=slice_progress, **options)
        for name in MAP_NAMES:
            maps[name][z] = getattr(fit, name)
    report(progress, 1.0, "T1 fit done")
    common = {"inversion_times_ms": series.inversion_times_ms.T.tolist(), "inversion_time_source": series.time_source,
              "t1_scheme_per_slice": schemes}
    return {name: reference.with_array(array, quantity=name, units=_UNITS[name], **common)
            for name, array in maps.items()}

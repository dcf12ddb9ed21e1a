"""T1 maps from a T1-mapping series: one vectorised fit per slice, results as Volumes on the source geometry.

A map where most fits failed is refused rather than returned as zeros: it almost always means wrong inversion
times (e.g. TriggerTime jitter of a few ms taken for TIs). The voxels judged are the mask's or, without a mask,
the signal-bearing voxels: those whose brightest image exceeds SIGNAL_FRACTION of the series' SIGNAL_PERCENTILE-th
percentile (the body, not the air around it). Measured with that rule, the failed fraction of the signal-bearing
voxels is 8.5 % (Philips 1.5 T MOLLI, native), 9.8 % (its post-contrast series) and 8.2 % (Siemens 3 T ShMOLLI
phantom) with the right TIs, and 99.6 %, 99.9 % and 100 % with TIs replaced by 1 ms steps from 587 ms (TriggerTime
jitter): MAX_FAILED_FRACTION = 0.5 lies far from both.
"""

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
MAX_FAILED_FRACTION = 0.5  # more failed fits than this among the judged voxels: InputError (module docstring)
SIGNAL_PERCENTILE = 99.0  # a robust "bright tissue" level of the series ...
SIGNAL_FRACTION = 0.1  # ... of which a voxel's brightest image must exceed this fraction to bear signal


def t1_maps(series: T1Series, mask: Volume | None = None, *, scheme: str = "auto",
            t1_range_ms: tuple[float, float] | None = None, progress: Progress | None = None) -> dict[str, Volume]:
    """Fit every slice of `series` (inside `mask`, default everywhere).

    mask: a 3D Volume on the series' grid; non-zero voxels are fitted. scheme: "auto" recognises ShMOLLI from
    the acquisition order of the inversion times (a 5, 1, 1 pattern of inversions), else fits all samples
    together as MOLLI (also when the order is unknown: series.order_source None); "molli" / "shmolli" force it
    (InputError for "shmolli" when the order is unknown).
    Returns (z, y, x) Volumes named as MAP_NAMES: "t1" (float32 ms), "a", "b", "t1_star" (ms), "r2" (all 0 where
    the fit failed or outside the mask), and "failed" (uint8: 1 where the fit failed or T1 left the plausible range
    inside the mask). Metadata record the scheme of each slice, the inversion times and where they came from.
    Raises InputError naming the source files when an image holds a NaN or infinite value (inside the mask), and
    when more than MAX_FAILED_FRACTION of the mask's voxels (without a mask: of the signal-bearing voxels, see the
    module docstring) failed, with the inversion times and their source.
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
    if mask is None:
        series.images.require_finite("the T1-mapping images")
    else:
        series.images.with_array(np.where(selected, series.images.array, 0)).require_finite(
            "the T1-mapping images inside the mask")
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
    _require_mostly_fitted(series, maps["failed"] > 0, selected if mask is not None else None)
    report(progress, 1.0, "T1 fit done")
    common = {"inversion_times_ms": series.inversion_times_ms.T.tolist(), "inversion_time_source": series.time_source,
              "t1_scheme_per_slice": schemes}
    return {name: reference.with_array(array, quantity=name, units=_UNITS[name], **common)
            for name, array in maps.items()}


def _require_mostly_fitted(series: T1Series, failed: np.ndarray, mask: np.ndarray | None) -> None:
    """InputError when more than MAX_FAILED_FRACTION of the voxels judged failed. failed, mask: (z, y, x) bool; without
    a mask the signal-bearing voxels are judged (module docstring); nothing is judged when there are none."""
    images = series.images.array
    if mask is None:
        judged = images.max(axis=0) > SIGNAL_FRACTION * np.percentile(images, SIGNAL_PERCENTILE)
        what = "voxels with signal"
    else:
        judged, what = mask, "voxels of the mask"
    count = int(judged.sum())
    if count == 0 or failed[judged].sum() <= MAX_FAILED_FRACTION * count:
        return
    slices = range(series.slices)
    if all(np.array_equal(series.inversion_times_ms[:, z], series.inversion_times_ms[:, 0]) for z in slices):
        times = _format_times(series.inversion_times_ms[:, 0])
    else:
        times = "; ".join(f"slice {z + 1}: {_format_times(series.inversion_times_ms[:, z])}" for z in slices)
    raise InputError(f"{series.images.describe_source()}: the T1 fit failed in {failed[judged].mean():.0%} of the "
                     f"{count} {what}; check the inversion times ({times} ms; source: {series.time_source}), and give "
                     "the right ones with --ti")


def _format_times(times: np.ndarray) -> str:
    """Inversion times in ms as a short comma-separated list."""
    return ", ".join(f"{time:g}" for time in times)

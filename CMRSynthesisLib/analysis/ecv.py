"""Extracellular volume fraction from native and post-contrast T1 maps.

ECV = (1 - Hct) (1/T1myo,post - 1/T1myo,native) / (1/T1blood,post - 1/T1blood,native), in %, with the blood T1s
the medians over a blood-pool region.
"""

from __future__ import annotations

import numpy as np

from ..errors import GeometryError, InputError
from ..io.itk_files import resample_onto
from ..volume import Volume

HAEMATOCRIT_RANGE = (0.1, 0.7)
_OUTSIDE = -1.0  # resampled value where the post-contrast map does not reach


def ecv_map(native: Volume, post: Volume, haematocrit: float, blood_pool: Volume, *,
            myocardium: Volume | None = None, resample: bool = False) -> tuple[Volume, dict]:
    """ECV map in % on the native map's grid, and a summary.

    native, post: T1 maps in ms (3D); voxels <= 0, NaN or infinite count as no value (failed fits). haematocrit: a fraction in
    HAEMATOCRIT_RANGE. blood_pool: mask on the native grid (LV blood). myocardium: optional mask on the native
    grid limiting where ECV is computed (default: wherever both maps have a value). resample: when the maps lie on
    different grids, interpolate the post-contrast map onto the native grid (linear) where the two overlap;
    without it, different grids are refused.
    Summary: blood T1s (ms), the haematocrit, the blood ΔR1, the number of voxels with an ECV, and the median ECV
    in the myocardium when it is given.
    """
    if not HAEMATOCRIT_RANGE[0] <= haematocrit <= HAEMATOCRIT_RANGE[1]:
        raise InputError(f"haematocrit {haematocrit} is outside {HAEMATOCRIT_RANGE[0]}-{HAEMATOCRIT_RANGE[1]}; give "
                         "it as a fraction (e.g. 0.42)")
    for name, volume in (("native", native), ("post-contrast", post)):
        if volume.array.ndim != 3:
            raise InputError(f"the {name} T1 map must be 3D (z, y, x); got shape {volume.array.shape}")
    native.require_same_frame_of_reference(post, native.named("the native T1 map"),
                                           post.named("the post-contrast T1 map"))
    post_values = _post_on_native_grid(native, post, resample)
    blood = native.mask_on_grid(blood_pool, "the blood-pool mask", "the native T1 map")
    region = native.mask_on_grid(myocardium, "the myocardium mask", "the native T1 map") if myocardium is not None else None
    native_values = _as_t1(native.array)
    blood_native, blood_post = (_median_t1(values, blood, volume.named(f"the {name} T1 map")) for values, name, volume
                                in ((native_values, "native", native), (post_values, "post-contrast", post)))
    if blood_post >= blood_native:
        raise InputError(f"the post-contrast blood T1 ({blood_post:.0f} ms) is not shorter than the native one "
                         f"({blood_native:.0f} ms); are the native and post-contrast maps swapped?")
    blood_delta_r1 = 1.0 / blood_post - 1.0 / blood_native
    valid = (native_values > 0) & (post_values > 0)
    if region is not None:
        valid &= region
    ecv = np.zeros(native.spatial_shape, dtype=np.float32)
    ecv[valid] = 100.0 * (1.0 - haematocrit) * (1.0 / post_values[valid] - 1.0 / native_values[valid]) / blood_delta_r1
    summary = {"blood_t1_native_ms": blood_native, "blood_t1_post_ms": blood_post, "haematocrit": haematocrit,
               "blood_delta_r1_per_s": 1000.0 * blood_delta_r1, "voxels_with_ecv": int(valid.sum()),
               "post_contrast_resampled": not native.same_geometry(post)}
    if region is not None:
        summary["myocardium_ecv_median_percent"] = float(np.median(ecv[valid])) if valid.any() else None
    return native.with_array(ecv, quantity="ecv", units="%", ecv=summary), summary


def _post_on_native_grid(native: Volume, post: Volume, resample: bool) -> np.ndarray:
    """The post-contrast map's values at the native map's voxels (float64); a clear error when not possible."""
    if native.same_geometry(post):
        return _as_t1(post.array)
    if not resample:
        differences = ", ".join(name for name, same in (
            ("size", native.spatial_shape == post.spatial_shape), ("spacing", np.allclose(native.spacing, post.spacing)),
            ("origin", np.allclose(native.origin, post.origin)),
            ("orientation", np.allclose(native.direction, post.direction))) if not same)
        raise GeometryError(f"{native.named('the native T1 map')} and {post.named('the post-contrast T1 map')} lie on "
                            f"different grids (they differ in {differences}); acquire them at the same positions, or "
                            "ask for resampling (--resample) where they overlap")
    values = resample_onto(post.with_array(_as_t1(post.array)), native, _OUTSIDE)
    if not (values != _OUTSIDE).any():
        raise GeometryError("the native and post-contrast T1 maps do not overlap; resampling is not possible")
    return values.astype(np.float64)


def _as_t1(array: np.ndarray) -> np.ndarray:
    """A T1 map as float64 ms with NaN / infinite voxels (another tool's failed fits) set to 0: no value."""
    values = np.asarray(array, dtype=np.float64)
    return np.where(np.isfinite(values), values, 0.0)


def _median_t1(values: np.ndarray, region: np.ndarray, name: str) -> float:
    """Median of the positive values in `region` (ms)."""
    inside = values[region & (values > 0)]
    if inside.size == 0:
        raise InputError(f"{name} has no value inside the blood-pool mask (failed fits, or the maps do "
                         "not overlap there)")
    return float(np.median(inside))

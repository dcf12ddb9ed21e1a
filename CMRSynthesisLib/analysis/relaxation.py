"""T1 recovery curves of every pixel on one fixed set of inversion times, whatever the scheme that acquired them.

MOLLI 5(3)3, 4(1)3(1)2, ShMOLLI 5(1)(1) and vendor variants sample the recovery at different inversion times and
counts (our real Philips 1.5 T study has 10 images per slice). A network that reads the relaxation (CPKDM's MR-ESMP,
paper 000, which feeds 8 MOLLI images) needs the same inputs from all of them, so each pixel's samples are fitted
with our own T1 fit (`t1mapping.t1_maps`: three-parameter Look-Locker model with polarity restoration, ShMOLLI's
conditional fit where the acquisition order shows ShMOLLI) and the fitted, polarity-restored model curve

    s(TI) = (A - B exp(-TI / T1*)) / A = 1 - (B / A) exp(-TI / T1*)

is evaluated at STANDARD_INVERSION_TIMES_MS. Dividing by A (the recovered signal) removes the receive gain, coil
shading and proton density, so s runs from 1 - B/A (about -1 after a full inversion) to 1 and depends on the
tissue's relaxation and on the readout: T1* is the apparent time constant, 1/T1* = 1/T1 + a readout term that
changes with flip angle, heart rate and vendor, so one tissue's curves from different protocols differ by that
term (its T1 = T1* (B/A - 1) does not).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..io.t1_series import T1Series
from ..progress import Progress
from ..volume import Volume
from .t1fit import detect_scheme
from .t1mapping import t1_maps

# Chosen: the 8 inversion times of a MOLLI 5(3)3 at 60 beats per minute (first TI 100 ms, second inversion 80 ms
# later), sorted, as the 8 MOLLI images the paper feeds.
STANDARD_INVERSION_TIMES_MS = (100.0, 180.0, 1100.0, 1180.0, 2100.0, 2180.0, 3100.0, 4100.0)


@dataclasses.dataclass
class RecoveryCurves:
    """Per-pixel recovery curves on common inversion times.

    curves: (n, z, y, x) float32 s(TI) of the module docstring at `inversion_times_ms`; 0 where not fitted.
    fitted: (z, y, x) bool, pixels inside the mask whose fit succeeded. t1: (z, y, x) float32 ms (0 where not
    fitted). inversion_times_ms: the n common inversion times. scheme: one line saying what was read (scheme,
    images per slice, inversions, where the inversion times came from).
    """

    curves: Volume
    fitted: np.ndarray
    t1: Volume
    inversion_times_ms: tuple[float, ...]
    scheme: str


def model_curve(a: np.ndarray, b: np.ndarray, t1_star: np.ndarray, inversion_times_ms: Sequence[float]
                ) -> np.ndarray:
    """s(TI) = 1 - (B / A) exp(-TI / T1*) at each inversion time: (n, *a.shape) float32; 0 where A or T1* is not
    positive (no fit)."""
    a, b, t1_star = (np.asarray(value, dtype=np.float64) for value in (a, b, t1_star))
    times = np.asarray(inversion_times_ms, dtype=np.float64).reshape(-1, *([1] * a.ndim))
    valid = (a > 0) & (t1_star > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        curve = 1.0 - np.where(valid, b / a, 0.0) * np.exp(-times / np.where(valid, t1_star, 1.0))
    return np.where(valid, curve, 0.0).astype(np.float32)


def describe_scheme(series: T1Series) -> str:
    """What a T1-mapping series is, in one line: the scheme named from the acquisition order of its inversion times
    (e.g. "MOLLI 5+3 (8 images per slice)", "ShMOLLI 5+1+1"), or that the pattern is unknown when nothing orders
    the images or when their order is that of the TIs (one inversion, or images numbered by TI as Philips numbers its
    MOLLI images), and the source of the
    inversion times. The images-per-inversion counts are the acquired ones; pause beats are not stored in DICOM and
    are not named."""
    counts = series.inversion_times_ms.shape[0]
    order = np.argsort(series.acquisition_rank[:, 0])
    times = series.inversion_times_ms[order, 0]
    if series.order_source is None:
        kind = f"{counts} images per slice, acquisition order unknown (fitted as MOLLI)"
    elif np.all(np.diff(times) > 0):  # several inversions never give rising TIs in acquisition order
        kind = (f"{counts} images per slice in rising inversion-time order ({series.order_source}): one inversion, "
                "or images numbered by inversion time, so the inversion pattern is not recorded (fitted as MOLLI)")
    else:
        scheme, index = detect_scheme(times)
        per_inversion = "+".join(str(count) for count in np.bincount(index))
        kind = f"{'ShMOLLI' if scheme == 'shmolli' else 'MOLLI'} {per_inversion} ({counts} images per slice)"
    return f"{kind}; inversion times from {series.time_source}"


def recovery_curves(series: T1Series, mask: Volume | None = None, *,
                    inversion_times_ms: Sequence[float] = STANDARD_INVERSION_TIMES_MS,
                    progress: Progress | None = None) -> RecoveryCurves:
    """Fit every pixel of `series` inside `mask` (a (z, y, x) Volume on its grid; default: every pixel) and evaluate
    its polarity-restored model curve at `inversion_times_ms` (module docstring).

    Raises InputError for empty or non-positive inversion times, and as `t1_maps` does (non-finite images, a mask on
    another grid, a fit that fails in most of the mask: wrong inversion times).
    """
    times = np.asarray(inversion_times_ms, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or not np.all(np.isfinite(times)) or np.any(times <= 0):
        raise InputError(f"the common inversion times must be positive ms values; got {list(inversion_times_ms)}")
    maps = t1_maps(series, mask, progress=progress)
    fitted = maps["t1"].array > 0
    curves = model_curve(maps["a"].array, maps["b"].array, maps["t1_star"].array, times)
    curves[:, ~fitted] = 0.0
    reference = maps["t1"]
    scheme = describe_scheme(series)
    curve_volume = reference.with_array(curves, quantity="recovery_curve", units="1",
                                        inversion_times_ms=times.tolist(), t1_scheme=scheme)
    return RecoveryCurves(curve_volume, fitted, reference, tuple(float(t) for t in times), scheme)

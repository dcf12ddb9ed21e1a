"""MOLLI and ShMOLLI T1 fitting on magnitude images, vectorised over all pixels of a mask.

Model (Messroghli et al., MRM 2004;52:141): S(TI) = A - B exp(-TI / T1*), fitted by least squares to the
polarity-restored magnitudes, with the Look-Locker correction T1 = T1* (B / A - 1).

Polarity restoration: a magnitude image loses the sign of the samples read while the magnetisation is still
inverted. For every number k of inverted early samples (in TI order) the signed curve is fitted, and the fit with
the lowest residual wins.

Method (variable projection): for a fixed T1* the model is linear in (A, B), so the residual already minimised
over (A, B) is a closed-form function of T1* alone. Every pixel is evaluated at once on a log-spaced grid of T1*
(2 ms to 40 s, neighbours 10 % apart) for every k, keeping physical solutions only (A > 0 and B > A, i.e. T1 > 0);
the best grid point of the two best k of each pixel is then refined by a vectorised golden-section search on
log T1* to about 1e-7 relative, and the better of the two refined fits is kept.

ShMOLLI needs its conditional fit (Piechnik et al., "Shortened Modified Look-Locker Inversion recovery (ShMOLLI)
for clinical myocardial T1-mapping at 1.5 and 3 T within a 9 heartbeat breathhold", JCMR 2010;12:69). Its
inversions follow each other without full recovery, so the samples after the 2nd and 3rd inversion lie on the
first inversion's curve only when T1 is short. Three fits (each with polarity restoration) are made: F5 on the
first inversion's samples, F6 adding the 2nd inversion's, F7 all. With chi_m = sqrt(RSS_m / (m - 1)) and RR the
spacing of the first inversion's samples (one heartbeat), the rule, in the form of the reference implementation
(tomato by K. Werys and S. Piechnik, github.com/MRKonrad/tomato, `CalculatorT1Shmolli::calculate`) is:

1. take F5 (when it is physical);
2. look further only when T1_5 <= RR, or F6 is not physical, or T1_6 <= 0.4 RR;
3. then take F6 when chi_6 T1_6 < chi_5 RR;
4. and take F7 when chi_7 T1_7 < chi_6 0.4 RR and the T1 taken so far is < RR.

(A comment in tomato notes that the article compares with chi_5 in step 4; tomato, and this module, use chi_6.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..progress import Progress, report

MOLLI, SHMOLLI = "molli", "shmolli"
SCHEMES = (MOLLI, SHMOLLI)
DEFAULT_T1_RANGE_MS = (50.0, 5000.0)
DEFAULT_MIN_R2 = 0.7  # below it the curve explains too little of the samples' variance to trust (see fit_t1)
MIN_INVERSION_TIMES = 3
CHUNK_PIXELS = 16384  # pixels fitted together: bounds the memory (about 100 MB a chunk) and paces progress
SHMOLLI_PATTERN = (5, 1, 1)  # samples after each inversion, in acquisition order
SHMOLLI_SHORT_FRACTION = 0.4  # step 4 of the conditional rule: all three inversions only for T1 < 0.4 RR

_TAU_GRID_MS = np.geomspace(2.0, 40000.0, 105)  # T1* candidates, neighbours 10 % apart
_GOLDEN_STEPS = 30  # golden-section steps from a 2-grid-step bracket: 0.19 * 0.618**30 ~ 1e-7 in log T1*
_INVERSE_PHI = (np.sqrt(5.0) - 1.0) / 2.0
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass
class T1Fit:
    """Per-pixel results, each of the signal's spatial shape; 0 (and not failed) outside the mask.

    t1, a, b, t1_star and r2 hold 0 where the fit failed too, so no map carries the values of a rejected fit;
    `inverted` and `samples_used` describe the attempted fit there.
    """

    t1: np.ndarray  # float32 ms, Look-Locker corrected; 0 outside the mask and where failed
    a: np.ndarray  # float32, same units as the signal; 0 outside the mask and where failed
    b: np.ndarray  # float32, same units as the signal; 0 outside the mask and where failed
    t1_star: np.ndarray  # float32 ms; 0 outside the mask and where failed
    r2: np.ndarray  # float32 R^2 of the chosen fit (polarity-restored samples); 0 outside the mask and where failed
    inverted: np.ndarray  # int8, number of early samples whose polarity was restored
    samples_used: np.ndarray  # int8, samples in the chosen fit (ShMOLLI: 5, 6 or 7; MOLLI: all; 0: none physical)
    failed: np.ndarray  # bool, True inside the mask where the fit failed, T1 left `t1_range_ms` or R^2 < `min_r2`


@dataclasses.dataclass
class _Curves:
    """Best fits of one set of samples, per pixel: (p,) arrays."""

    a: np.ndarray
    b: np.ndarray
    tau: np.ndarray  # T1*, ms
    rss: np.ndarray  # residual sum of squares
    tss: np.ndarray  # total sum of squares of the polarity-restored samples about their mean
    inverted: np.ndarray  # k
    physical: np.ndarray  # finite, A > 0, B > A, T1* inside the grid

    @property
    def t1(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.physical, self.tau * (self.b / self.a - 1.0), 0.0)

    def chi(self, samples: int) -> np.ndarray:
        """Root mean square residual with samples - 1 degrees of freedom (tomato's ChiSqrt)."""
        return np.sqrt(self.rss / (samples - 1))

    def pick(self, where: np.ndarray, other: _Curves) -> _Curves:
        """This fit where `where` is True, `other` elsewhere."""
        return _Curves(*(np.where(where, getattr(self, field.name), getattr(other, field.name))
                         for field in dataclasses.fields(self)))


def detect_scheme(inversion_times_ms: Sequence[float]) -> tuple[str, list[int]]:
    """Scheme and inversion index of each sample, from the TIs in acquisition (instance) order.

    After one inversion the images come a heartbeat or more apart, so the TI rises by about an RR interval
    each time. A new inversion starts wherever the TI drops or rises by less than half the typical rise (the
    median of the rises): a TI drop alone misses ShMOLLI's 2nd-to-3rd inversion step (TI 180 then 260 ms).
    Samples per inversion 5, 1, 1 -> SHMOLLI; anything else MOLLI (all samples fitted together).
    Returns (scheme, inversion index of each sample, 0 for the first inversion).
    """
    times = _check_times(inversion_times_ms)
    steps = np.diff(times)
    rises = steps[steps > 0]
    heartbeat = float(np.median(rises)) if rises.size else np.inf
    index = np.concatenate([[0], np.cumsum(steps < 0.5 * heartbeat)]).astype(int).tolist()
    counts = tuple(np.bincount(index).tolist())
    return (SHMOLLI if counts == SHMOLLI_PATTERN else MOLLI), index


def fit_t1(signal: np.ndarray, inversion_times_ms: Sequence[float], mask: np.ndarray | None = None, *,
           scheme: str = MOLLI, inversion_index: Sequence[int] | None = None,
           t1_range_ms: tuple[float, float] = DEFAULT_T1_RANGE_MS, min_r2: float = DEFAULT_MIN_R2,
           rr_ms: float | None = None, progress: Progress | None = None) -> T1Fit:
    """Fit T1 in every pixel of `mask`.

    signal: (n, *spatial) magnitude samples in any order (sorted internally by TI). inversion_times_ms: (n,) one
    set of TIs for all these pixels (fit one slice at a time where the TIs differ between slices). mask: bool
    spatial (default: all pixels). scheme: MOLLI fits all samples together; SHMOLLI uses the conditional fit of
    the module docstring. inversion_index: (n,) the inversion (0, 1, 2) each sample follows, in the order of
    `signal`; needed for SHMOLLI (e.g. [0, 0, 0, 0, 0, 1, 2], see `detect_scheme`). t1_range_ms: plausible
    (low, high) T1; fits outside it are flagged failed. min_r2: fits with a lower R^2 are flagged failed
    (polarity restoration can draw a curve through pure noise: at the default 0.7, 40-60 % of pure-noise
    pixels are flagged with 8-10 samples, while fits at an SNR of 10 (noise SD a tenth of A) almost never are).
    rr_ms: ShMOLLI's heartbeat interval; default the spacing of the first inversion's TIs. progress: called
    after each chunk of pixels; returning False cancels (raises Cancelled).

    A pixel is failed when no physical fit exists (A > 0, B > A, T1* within 2 ms - 40 s), T1 lies outside
    t1_range_ms or R^2 < min_r2; its T1, A, B, T1* and R^2 are 0. InputError for a non-finite or negative sample
    inside the mask (the message says "inside the mask" only when a mask is given), and for bad arguments.
    """
    times = _check_times(inversion_times_ms)
    signal = np.asarray(signal)
    if signal.ndim < 1 or signal.shape[0] != times.size:
        raise InputError(f"the signal has shape {signal.shape} but there are {times.size} inversion times: the "
                         "first axis must hold one image per inversion time")
    if not (np.issubdtype(signal.dtype, np.integer) or np.issubdtype(signal.dtype, np.floating)):
        raise InputError(f"the signal must be real magnitude values; got dtype {signal.dtype}")
    spatial = signal.shape[1:]
    where = "" if mask is None else " inside the mask"  # for messages about the samples
    mask = _check_mask(mask, spatial)
    low, high = _check_range(t1_range_ms)
    if not _is_number(min_r2) or not float(min_r2) <= 1.0:
        raise InputError(f"min_r2 must be a number <= 1 (the lowest acceptable R^2); got {min_r2!r}")
    if scheme not in SCHEMES:
        raise InputError(f"unknown T1-mapping scheme {scheme!r}; use one of {SCHEMES}")
    order = np.argsort(times, kind="stable")
    times = times[order]
    subsets = [np.arange(times.size)]
    if scheme == SHMOLLI:
        subsets, default_rr = _shmolli_subsets(inversion_index, order, times)
        rr_ms = default_rr if rr_ms is None else rr_ms
        if not _is_number(rr_ms) or not 0 < float(rr_ms) < np.inf:
            raise InputError(f"the ShMOLLI heartbeat interval rr_ms must be a positive number of ms; got {rr_ms!r}")
    samples = signal.reshape(times.size, -1)[order][:, mask.ravel()]
    if not np.all(np.isfinite(samples)):
        raise InputError(f"the signal has NaN or infinite values{where}")
    if np.any(samples < 0):
        raise InputError(f"the signal has negative values{where}; the fit needs magnitude images")

    count = samples.shape[1]
    columns = {name: np.zeros(count, dtype) for name, dtype in
               (("t1", np.float32), ("a", np.float32), ("b", np.float32), ("t1_star", np.float32),
                ("r2", np.float32), ("inverted", np.int8), ("samples_used", np.int8), ("failed", bool))}
    report(progress, 0.0, f"T1 fit: {count} pixels")
    for start in range(0, count, CHUNK_PIXELS):
        part = slice(start, min(start + CHUNK_PIXELS, count))
        y = samples[:, part].T.astype(np.float64)
        fits = [_fit_curves(y[:, subset], times[subset]) for subset in subsets]
        if scheme == SHMOLLI:
            best, used = _shmolli_choice(fits, [subset.size for subset in subsets], rr_ms)
        else:
            best, used = fits[0], np.where(fits[0].physical, times.size, 0)
        t1 = best.t1
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(best.tss > 0, 1.0 - best.rss / best.tss, 0.0)
        failed = (used == 0) | ~(t1 >= low) | ~(t1 <= high) | ~(r2 >= min_r2)
        for name, values in (("t1", t1), ("a", best.a), ("b", best.b), ("t1_star", best.tau), ("r2", r2)):
            kept = ~failed & (np.abs(values) <= _FLOAT32_MAX)  # and not NaN, inf or beyond float32
            columns[name][part] = np.where(kept, values, 0.0)
        columns["inverted"][part] = best.inverted
        columns["samples_used"][part] = used
        columns["failed"][part] = failed
        report(progress, part.stop / count, f"T1 fit: {part.stop} of {count} pixels")

    maps = {}
    for name, values in columns.items():
        full = np.zeros(mask.size, values.dtype)
        full[mask.ravel()] = values
        maps[name] = full.reshape(spatial)
    return T1Fit(**maps)


def _is_number(value: object) -> bool:
    """A real scalar (Python or numpy), not a bool."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _check_times(inversion_times_ms: Sequence[float]) -> np.ndarray:
    """The TIs as a float64 vector: at least three distinct, all positive and finite."""
    try:
        times = np.asarray(inversion_times_ms, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"inversion times must be numbers in ms; got {inversion_times_ms!r}") from error
    if times.ndim != 1:
        raise InputError(f"inversion times must be one list of numbers (ms); got shape {times.shape}")
    if not np.all(np.isfinite(times)) or np.any(times <= 0):
        raise InputError(f"inversion times must be positive finite ms; got {times.tolist()}")
    if np.unique(times).size < MIN_INVERSION_TIMES:
        raise InputError(f"a T1 fit needs at least {MIN_INVERSION_TIMES} different inversion times; got "
                         f"{times.tolist()}")
    return times


def _check_mask(mask: np.ndarray | None, spatial: tuple[int, ...]) -> np.ndarray:
    """The mask as a bool array of the signal's spatial shape, with at least one pixel."""
    if mask is None:
        mask = np.ones(spatial, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != spatial:
        raise InputError(f"the mask has shape {mask.shape} but the images are {spatial}")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise InputError(f"the mask must be boolean or integer labels; got dtype {mask.dtype}")
    mask = mask.astype(bool)
    if not mask.any():
        raise InputError("the mask selects no pixel to fit")
    return mask


def _check_range(t1_range_ms: tuple[float, float]) -> tuple[float, float]:
    """(low, high) plausible T1 in ms, 0 <= low < high < inf."""
    try:
        low, high = (float(value) for value in t1_range_ms)
    except (TypeError, ValueError) as error:
        raise InputError(f"t1_range_ms must be (low, high) in ms; got {t1_range_ms!r}") from error
    if not (0.0 <= low < high < np.inf):
        raise InputError(f"t1_range_ms must satisfy 0 <= low < high < infinity; got {t1_range_ms!r}")
    return low, high


def _shmolli_subsets(inversion_index: Sequence[int] | None, order: np.ndarray,
                     times: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Sample indices (in sorted-TI order) of the fits F5, F6, F7, and RR from the first inversion's TIs."""
    if inversion_index is None:
        raise InputError("ShMOLLI needs the inversion each sample follows (inversion_index, e.g. "
                         "[0, 0, 0, 0, 0, 1, 2]; detect_scheme gives it from the TIs in acquisition order)")
    index = np.asarray(inversion_index)
    if index.shape != order.shape or not np.issubdtype(index.dtype, np.integer):
        raise InputError(f"inversion_index must hold one integer per inversion time ({order.size}); got "
                         f"{list(inversion_index)}")
    index = index[order]
    counts = [int(np.sum(index == inversion)) for inversion in range(3)]
    if np.any((index < 0) | (index > 2)) or counts[0] < MIN_INVERSION_TIMES or min(counts[1:]) < 1:
        raise InputError(f"ShMOLLI needs at least {MIN_INVERSION_TIMES} samples after the first inversion and at "
                         f"least one after each of the 2nd and 3rd (inversion_index 0, 1, 2); got "
                         f"{list(inversion_index)}")
    first = times[index == 0]
    if np.unique(first).size < MIN_INVERSION_TIMES:
        raise InputError(f"ShMOLLI needs {MIN_INVERSION_TIMES} different TIs after the first inversion; got "
                         f"{first.tolist()}")
    subsets = [np.flatnonzero(index <= last) for last in range(3)]
    return subsets, float(np.mean(np.diff(first)))


def _shmolli_choice(fits: list[_Curves], sizes: list[int], rr_ms: float) -> tuple[_Curves, np.ndarray]:
    """The conditional choice among F5, F6, F7 (module docstring): the chosen fit and its sample count (0: none)."""
    five, six, seven = fits
    n5, n6, n7 = sizes
    t1_5, t1_6, t1_7 = five.t1, six.t1, seven.t1
    chi5, chi6, chi7 = five.chi(n5), six.chi(n6), seven.chi(n7)
    used = np.where(five.physical, n5, 0)
    chosen_t1 = t1_5
    further = (chosen_t1 <= rr_ms) | ~six.physical | (t1_6 <= SHMOLLI_SHORT_FRACTION * rr_ms)
    take6 = further & six.physical & (chi6 * t1_6 < chi5 * rr_ms)
    used = np.where(take6, n6, used)
    chosen_t1 = np.where(take6, t1_6, chosen_t1)
    take7 = (further & six.physical & seven.physical & (chosen_t1 < rr_ms)
             & (chi7 * t1_7 < chi6 * SHMOLLI_SHORT_FRACTION * rr_ms))
    used = np.where(take7, n7, used)
    best = seven.pick(take7, six.pick(take6, five))
    return best, used


def _fit_curves(y: np.ndarray, ti: np.ndarray) -> _Curves:
    """Least-squares fit of A - B exp(-TI/T1*) with polarity restoration. y: (p, n) magnitudes, ti: (n,) sorted."""
    p, n = y.shape
    grid = _TAU_GRID_MS
    columns = np.arange(p)
    decay = np.exp(-ti[None, :] / grid[:, None])  # (g, n)
    s1 = decay.sum(axis=1)[:, None]
    s2 = (decay * decay).sum(axis=1)[:, None]
    det = n * s2 - s1 * s1  # of the normal matrix [[n, -s1], [-s1, s2]] of the basis (1, -exp(-TI/T1*))
    energy = (y * y).sum(axis=1)  # unchanged by sign flips
    u0 = y.sum(axis=1)  # basis' inner products with the signed samples: sum(y) ...
    u1 = -(decay @ y.T)  # ... and -sum(exp(-TI/T1*) y), (g, p)
    best_rss = np.full((n, p), np.inf)
    best_step = np.zeros((n, p), dtype=np.intp)
    for k in range(n):  # k earliest samples inverted
        if k:
            u0 = u0 - 2.0 * y[:, k - 1]
            u1 += 2.0 * decay[:, k - 1 : k] * y[None, :, k - 1]
        a = (s2 * u0 + s1 * u1) / det
        b = (s1 * u0 + n * u1) / det
        rss = energy - (a * u0 + b * u1)
        rss[(a <= 0) | (b <= a)] = np.inf
        best_step[k] = rss.argmin(axis=0)
        best_rss[k] = rss[best_step[k], columns]

    result = None
    for rank in np.argsort(best_rss, axis=0, kind="stable")[:2]:  # refine the two best k of each pixel
        step = best_step[rank, columns]
        signed = np.where(np.arange(n)[None, :] < rank[:, None], -y, y)
        candidate = _refine(signed, ti, step)
        candidate.inverted = rank
        candidate.physical &= np.isfinite(best_rss[rank, columns])
        if result is None:
            result = candidate
        else:
            result = candidate.pick(candidate.physical & (~result.physical | (candidate.rss < result.rss)), result)
    return result


def _refine(signed: np.ndarray, ti: np.ndarray, step: np.ndarray) -> _Curves:
    """Golden-section search of log T1* between the grid neighbours of `step`; the fit at the best T1*."""
    grid = np.log(_TAU_GRID_MS)
    low = grid[np.maximum(step - 1, 0)]
    high = grid[np.minimum(step + 1, grid.size - 1)]
    inner_low = high - _INVERSE_PHI * (high - low)
    inner_high = low + _INVERSE_PHI * (high - low)
    f_low, f_high = _projected_rss(signed, ti, inner_low)[0], _projected_rss(signed, ti, inner_high)[0]
    for _ in range(_GOLDEN_STEPS):
        left = f_low < f_high  # the minimum lies in [low, inner_high]
        high = np.where(left, inner_high, high)
        low = np.where(left, low, inner_low)
        new = np.where(left, high - _INVERSE_PHI * (high - low), low + _INVERSE_PHI * (high - low))
        f_new = _projected_rss(signed, ti, new)[0]
        inner_high, f_high, inner_low, f_low = (np.where(left, inner_low, new), np.where(left, f_low, f_new),
                                                np.where(left, new, inner_high), np.where(left, f_new, f_high))
    log_tau = np.where(f_low < f_high, inner_low, inner_high)
    grid_point = grid[step]  # keep the grid point should the search have found a worse local minimum
    log_tau = np.where(_projected_rss(signed, ti, grid_point)[0] < np.minimum(f_low, f_high), grid_point, log_tau)
    rss, a, b = _projected_rss(signed, ti, log_tau)
    tau = np.exp(log_tau)
    tss = ((signed - signed.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    physical = np.isfinite(rss) & (a > 0) & (b > a) & (tau > _TAU_GRID_MS[1]) & (tau < _TAU_GRID_MS[-2])
    return _Curves(a, b, tau, rss, tss, np.zeros(tau.shape, np.intp), physical)


def _projected_rss(signed: np.ndarray, ti: np.ndarray,
                   log_tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Residual sum of squares, A and B of the best (A, B) for T1* = exp(log_tau), per pixel: (p,) each."""
    n = ti.size
    decay = np.exp(-ti[None, :] / np.exp(log_tau)[:, None])  # (p, n)
    s1 = decay.sum(axis=1)
    s2 = (decay * decay).sum(axis=1)
    u0 = signed.sum(axis=1)
    u1 = -(decay * signed).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = n * s2 - s1 * s1
        a = (s2 * u0 + s1 * u1) / det
        b = (s1 * u0 + n * u1) / det
        residual = signed - a[:, None] + b[:, None] * decay
    return (residual * residual).sum(axis=1), a, b

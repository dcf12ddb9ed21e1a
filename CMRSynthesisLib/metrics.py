"""Image-quality and contrast metrics as the papers define them (paper 002, section 3.3).

Structure preservation (SSIM, PSNR, MSE, NMSE, LPIPS) is measured on a crop around the ground-truth ROI of a
2D slice, at least 16 x 16 pixels; contrast is CNR(tissue1, tissue2) = |mean(tissue1) - mean(tissue2)| /
std(tissue2). Arrays are numpy, 2D slices (y, x) unless stated; intensities are in the image's own units.

LPIPS needs the `lpips` package and its pretrained AlexNet backbone on this machine. Nothing is downloaded:
when either is missing LPIPS is reported as unavailable, with the reason, never as a made-up number.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from scipy import ndimage
from skimage import metrics as skmetrics

from .errors import InputError
from .preprocess import LVCrop

LPIPS_BACKBONE = "AlexNet_Weights.IMAGENET1K_V1"  # torchvision weights the `lpips` package uses for net="alex"
LPIPS_MIN_SIZE = 64  # crops are upsampled to at least this many pixels a side: AlexNet's pooling needs >= 31


def _check_array(array: Any, name: str) -> np.ndarray:
    """`array` as float64, refusing NaN and infinite values."""
    array = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} of shape {array.shape} contains NaN or infinite values")
    return array


def _check_pair(reference: Any, test: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both images as finite float64 arrays of the same shape."""
    reference, test = _check_array(reference, "reference image"), _check_array(test, "test image")
    if reference.shape != test.shape:
        raise InputError(f"reference image of shape {reference.shape} and test image of shape {test.shape} differ")
    return reference, test


def _check_2d(array: np.ndarray, name: str) -> None:
    if array.ndim != 2:
        raise InputError(f"{name} must be a 2D slice (y, x); got shape {array.shape}")


def _check_data_range(data_range: float) -> float:
    if not data_range > 0:
        raise InputError(f"data_range must be positive; got {data_range} (is the reference image constant?)")
    return float(data_range)


def roi_bounding_box(roi: np.ndarray, min_size: int = 16) -> tuple[slice, slice]:
    """(y, x) slices of the bounding box of the non-zero pixels of a 2D mask, enlarged symmetrically to at least
    `min_size` x `min_size` (or the whole image side when it is smaller) and shifted to stay inside the image."""
    roi = np.asarray(roi).astype(bool)
    _check_2d(roi, "ROI mask")
    if not roi.any():
        raise InputError(f"ROI mask of shape {roi.shape} is empty: no pixel to crop around")
    box = ndimage.find_objects(roi.astype(np.uint8))[0]
    enlarged = []
    for axis_slice, size in zip(box, roi.shape):
        length = max(axis_slice.stop - axis_slice.start, min(min_size, size))
        start = axis_slice.start - (length - (axis_slice.stop - axis_slice.start)) // 2
        start = min(max(start, 0), size - length)
        enlarged.append(slice(start, start + length))
    return enlarged[0], enlarged[1]


def scaled_by_crop(image: np.ndarray, crop: LVCrop, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """A whole slice (y, x) scaled to [0, 1] by the `percentiles` of its pixels on `crop`, as a method normalises its
    crop for its model (e.g. `percentile_normalise` of the crop) but on the slice's own pixels (not resampled), so a
    synthesis pasted back onto the slice is compared with the truth on one scale: float64 (y, x)."""
    image = np.asarray(image, dtype=np.float64)
    low, high = np.percentile(crop.extract(image.astype(np.float32)), percentiles)
    return np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)


def crop_box(crop: LVCrop, shape_yx: tuple[int, int]) -> tuple[slice, slice]:
    """The box of the slice's pixels (y, x) wholly inside `crop` (where a pasted crop has values)."""
    rows, cols = np.nonzero(crop.paste(np.ones((crop.size, crop.size), np.float32), shape_yx) > 0.999)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared difference, in squared image units."""
    a, b = _check_pair(a, b)
    return float(skmetrics.mean_squared_error(a, b))


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE); inf for identical images."""
    reference, test = _check_pair(reference, test)
    data_range = _check_data_range(data_range)
    if np.array_equal(reference, test):
        return float("inf")
    return float(skmetrics.peak_signal_noise_ratio(reference, test, data_range=data_range))


def nmse(reference: np.ndarray, test: np.ndarray) -> float:
    """Normalised MSE, sum((reference - test)^2) / sum(reference^2)."""
    reference, test = _check_pair(reference, test)
    if not reference.any():
        raise InputError(f"NMSE is undefined for an all-zero reference image of shape {reference.shape}")
    return float(skmetrics.normalized_root_mse(reference, test, normalization="euclidean") ** 2)


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float) -> float:
    """Structural similarity of two 2D images (skimage, 7 x 7 uniform window, smaller on crops under 7 pixels)."""
    reference, test = _check_pair(reference, test)
    _check_2d(reference, "reference image")
    data_range = _check_data_range(data_range)
    win_size = min(7, *reference.shape)
    win_size -= 1 - win_size % 2  # the window side must be odd
    if win_size < 3:
        raise InputError(f"SSIM needs images of at least 3 x 3 pixels; got shape {reference.shape}")
    return float(skmetrics.structural_similarity(reference, test, win_size=win_size, data_range=data_range))


def cnr(image: np.ndarray, region1: np.ndarray, region2: np.ndarray) -> float:
    """Contrast-to-noise ratio |mean(image[region1]) - mean(image[region2])| / std(image[region2]).

    image: any shape (2D slice or 3D volume); region1, region2: masks of the same shape. std is the population
    standard deviation (numpy's default, ddof=0).
    """
    image = _check_array(image, "image")
    values = []
    for name, region in (("region1", region1), ("region2", region2)):
        region = np.asarray(region).astype(bool)
        if region.shape != image.shape:
            raise InputError(f"{name} mask of shape {region.shape} does not match the image of shape {image.shape}")
        if not region.any():
            raise InputError(f"{name} mask is empty: CNR needs at least one pixel in each region")
        values.append(image[region])
    noise = float(np.std(values[1]))
    if noise == 0:
        raise InputError(f"CNR is undefined: the {values[1].size} pixel(s) of region2 all have the same value "
                         f"{values[1][0]}, so its standard deviation (the noise) is 0")
    return abs(float(np.mean(values[0])) - float(np.mean(values[1]))) / noise


def contrast_metrics(image: np.ndarray, scar: np.ndarray, myocardium: np.ndarray,
                     blood: np.ndarray) -> dict[str, float]:
    """CNR of scar against healthy myocardium and against the blood pool (masks of the image's shape)."""
    return {"cnr_scar_myo": cnr(image, scar, myocardium), "cnr_scar_blood": cnr(image, scar, blood)}


class LPIPS:
    """The LPIPS distance (v0.1, AlexNet) when the `lpips` package and its weights are present locally.

    Check `available` (and `reason`, which says what is missing or which weights are used) before relying on
    `distance`, which returns None when LPIPS is unavailable.
    """

    def __init__(self) -> None:
        self.available, self.reason, self._model = False, "", None
        try:
            import lpips  # optional dependency; it imports torchvision
            import torch
            import torchvision
        except (ImportError, RuntimeError) as error:  # absent, or a torchvision build that does not fit torch
            self.reason = (f"LPIPS is unavailable: the optional 'lpips' package cannot be imported ({error}); "
                           "install the 'lpips' extra under constraints.txt")
            return
        linear_weights = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
        url = torchvision.models.get_weight(LPIPS_BACKBONE).url
        backbone = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        for path, what, source in ((linear_weights, "the lpips linear-layer weights", "the lpips package"),
                                   (backbone, "the AlexNet backbone weights", url)):
            if not path.is_file():
                self.reason = (f"LPIPS is unavailable: {what} are not at {path} and are never downloaded here; "
                               f"copy the file there (from {source})")
                return
        try:
            self._model = lpips.LPIPS(net="alex", version="0.1", verbose=False).eval()
        except (OSError, RuntimeError, pickle.UnpicklingError) as error:
            self.reason = f"LPIPS is unavailable: loading its network from {backbone} failed ({error})"
            return
        self.available, self.reason = True, f"LPIPS v0.1 with the AlexNet backbone {backbone}"

    def distance(self, reference: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float | None:
        """LPIPS between two 2D images, or None when unavailable. Both are mapped to [-1, 1] by the reference's
        minimum and `data_range` (default: the reference's max - min), repeated to 3 channels and upsampled
        (bilinear) so the shorter side is at least LPIPS_MIN_SIZE pixels."""
        reference, test = _check_pair(reference, test)
        _check_2d(reference, "reference image")
        if not self.available:
            return None
        import torch

        low = reference.min()
        data_range = _check_data_range(np.ptp(reference) if data_range is None else data_range)
        scale = max(1.0, LPIPS_MIN_SIZE / min(reference.shape))
        batch = torch.from_numpy(np.stack([reference, test])[:, None] - low).float() * (2 / data_range) - 1
        batch = torch.nn.functional.interpolate(batch, scale_factor=scale, mode="bilinear").expand(-1, 3, -1, -1)
        with torch.no_grad():
            return float(self._model(batch[:1], batch[1:]).item())


@functools.cache
def _default_lpips() -> LPIPS:
    return LPIPS()


def lpips_status() -> tuple[bool, str]:
    """(available, reason): whether LPIPS can be computed here, and what is missing or which weights are used."""
    metric = _default_lpips()
    return metric.available, metric.reason


def lpips_unavailable() -> dict[str, str]:
    """{"lpips": why} when LPIPS cannot be computed on this machine, else {}: an evaluation's unavailable metrics."""
    available, reason = lpips_status()
    return {} if available else {"lpips": reason}


def lpips_distance(reference: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float | None:
    """LPIPS between two 2D images (see LPIPS.distance), or None when LPIPS is unavailable here."""
    return _default_lpips().distance(reference, test, data_range)


def region_metrics(reference: np.ndarray, test: np.ndarray, roi: np.ndarray, data_range: float | None = None,
                   min_size: int = 16) -> dict[str, float | str | None]:
    """SSIM, PSNR (dB), MSE, NMSE and LPIPS of two 2D slices on the ROI bounding-box crop (see roi_bounding_box).

    data_range defaults to the reference crop's max - min. "lpips" is None when LPIPS is unavailable, and
    "lpips_unavailable_reason" then says why (it is None when LPIPS was computed).
    """
    reference, test = _check_pair(reference, test)
    _check_2d(reference, "reference image")
    roi = np.asarray(roi)
    if roi.shape != reference.shape:
        raise InputError(f"ROI mask of shape {roi.shape} does not match the images of shape {reference.shape}")
    box = roi_bounding_box(roi, min_size)
    reference, test = reference[box], test[box]
    data_range = _check_data_range(np.ptp(reference) if data_range is None else data_range)
    available, reason = lpips_status()
    return {
        "ssim": ssim(reference, test, data_range),
        "psnr": psnr(reference, test, data_range),
        "mse": mse(reference, test),
        "nmse": nmse(reference, test),
        "lpips": lpips_distance(reference, test, data_range),
        "lpips_unavailable_reason": None if available else reason,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Mean, sample SD (ddof=1) and N per key over rows (slices or subjects), ignoring None and non-finite values
    (e.g. the infinite PSNR of identical images; "n_nonfinite" counts them).

    Keys holding anything but numbers and None (e.g. a reason string) are left out. A key with no values gets
    mean None; SD is None below 2 values.
    """
    keys = dict.fromkeys(key for row in rows for key in row)
    summary: dict[str, dict[str, float | int | None]] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        values = [value for value in values if value is not None]
        if not all(isinstance(value, (int, float, np.number)) and not isinstance(value, bool) for value in values):
            continue
        data = np.asarray(values, dtype=np.float64)
        finite = data[np.isfinite(data)]
        summary[key] = {
            "mean": float(finite.mean()) if finite.size else None,
            "sd": float(finite.std(ddof=1)) if finite.size > 1 else None,
            "n": int(finite.size),
            "n_nonfinite": int(data.size - finite.size),
        }
    return summary


# --- agreement of paired measurements (AHA segments, global values) ---------------------------------------------


def _paired(predicted: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two 1D float64 arrays of the same length."""
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    true = np.asarray(true, dtype=np.float64).ravel()
    if predicted.shape != true.shape:
        raise InputError(f"paired measurements need as many predicted ({predicted.size}) as true ({true.size}) values")
    return predicted, true


def bland_altman(predicted: Any, true: Any) -> dict[str, float | int]:
    """Bland-Altman agreement of paired measurements (Bland & Altman, Lancet 1986; i: 307-310).

    predicted, true: sequences of n >= 2 finite values in the same units (e.g. mean myocardial T1 in ms per AHA
    segment, pooled over subjects). With the differences d = predicted - true: "bias" = mean(d), "sd" = SD(d) (sample,
    ddof=1), the 95 % limits of agreement "loa_low" / "loa_high" = bias -+ 1.96 SD, and "n". InputError for unequal
    lengths, fewer than 2 pairs or non-finite values.
    """
    predicted, true = _paired(predicted, true)
    if predicted.size < 2:
        raise InputError(f"Bland-Altman limits need at least 2 paired values; got {predicted.size}")
    if not (np.all(np.isfinite(predicted)) and np.all(np.isfinite(true))):
        raise InputError("Bland-Altman analysis got NaN or infinite values; leave missing measurements out")
    difference = predicted - true
    bias, sd = float(difference.mean()), float(difference.std(ddof=1))
    return {"n": int(difference.size), "bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}


def pearson_r(predicted: Any, true: Any) -> tuple[float, float]:
    """Pearson's correlation coefficient r of paired finite values and its two-sided p-value (scipy.stats.pearsonr,
    H0: r = 0). InputError for fewer than 3 pairs, non-finite values, or a constant sequence (r undefined)."""
    from scipy import stats

    predicted, true = _paired(predicted, true)
    if predicted.size < 3:
        raise InputError(f"Pearson's r needs at least 3 paired values; got {predicted.size}")
    if not (np.all(np.isfinite(predicted)) and np.all(np.isfinite(true))):
        raise InputError("Pearson's r got NaN or infinite values; leave missing measurements out")
    if np.ptp(predicted) == 0 or np.ptp(true) == 0:
        raise InputError("Pearson's r is undefined when one of the sequences is constant")
    result = stats.pearsonr(predicted, true)
    return float(result.statistic), float(result.pvalue)


def agreement(predicted: Any, true: Any) -> dict[str, float | int | None]:
    """Pearson r (and its p-value "p_r") and Bland-Altman statistics (see `bland_altman`) of paired measurements,
    over the pairs where both values are finite (a missing AHA segment is NaN and is left out); "n" counts those
    pairs. A statistic that is undefined for these pairs (r below 3 pairs or for a constant sequence, limits below 2
    pairs) is None."""
    predicted, true = _paired(predicted, true)
    keep = np.isfinite(predicted) & np.isfinite(true)
    predicted, true = predicted[keep], true[keep]
    result: dict[str, float | int | None] = {"n": int(predicted.size), "r": None, "p_r": None, "bias": None,
                                             "sd": None, "loa_low": None, "loa_high": None}
    if predicted.size >= 3 and np.ptp(predicted) > 0 and np.ptp(true) > 0:
        result["r"], result["p_r"] = pearson_r(predicted, true)
    if predicted.size >= 2:
        result.update(bland_altman(predicted, true))
    return result


def segment_means(labels: Any, values: Any, mask: Any = None) -> np.ndarray:
    """Mean of a map in each of the 16 AHA segments (Cerqueira et al. 2002), as 16 floats, NaN for a segment without
    a usable voxel.

    labels: AHA segment labels (z, y, x), 0 outside the myocardium and 1-16 inside (`analysis.aha.aha_segments(...)
    .labels.array`); values: the map on the same grid (e.g. T1 in ms); mask: optional boolean selection on that grid
    (e.g. values > 0, the voxels whose T1 fit succeeded). Non-finite voxels are ignored. InputError for arrays of
    different shapes.
    """
    labels, values = np.asarray(labels), np.asarray(values, dtype=np.float64)
    if labels.shape != values.shape:
        raise InputError(f"AHA labels of shape {labels.shape} and the map of shape {values.shape} differ")
    usable = np.isfinite(values)
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != values.shape:
            raise InputError(f"the mask of shape {mask.shape} does not match the map of shape {values.shape}")
        usable &= mask
    means = np.full(16, np.nan)
    for segment in range(1, 17):
        selected = values[usable & (labels == segment)]
        if selected.size:
            means[segment - 1] = selected.mean()
    return means

"""Shared pre-processing for the 2D slice models: square crops around a region, intensity scaling, and the exact
inverses, so every result is pasted back on its input's voxel grid; crops of a fixed physical pixel size centred on
the LV (`LVCrop`), and a cine's frames resampled to a fixed number of phases over one heartbeat (`cycle_frames`).

A crop is taken at native resolution when the region fits in `size` pixels (then crop -> paste is exact); a larger
region gets a bigger square box that is resized to `size` and back. Also: reading a region mask given by a user
(binary, probability or label map) and measuring whether a crop holds image structure at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from .errors import InputError
from .volume import Volume

PROBABILITY_THRESHOLD = 0.5
CINE_PERCENTILES = (1.0, 99.0)  # a cine crop's phases are scaled together to [0, 1] by these (cine methods)


@dataclasses.dataclass(frozen=True)
class SquareCrop:
    """A square box of `side` pixels with top-left corner (y0, x0) in an image of `image_shape`, seen by a model
    as `size` x `size` pixels. The box may extend past the image border (padded with the edge value)."""

    y0: int
    x0: int
    side: int
    size: int
    image_shape: tuple[int, int]

    def _overlap(self) -> tuple[slice, slice, slice, slice]:
        """Slices of the image and of the box where they overlap."""
        height, width = self.image_shape
        iy0, ix0 = max(self.y0, 0), max(self.x0, 0)
        iy1, ix1 = min(self.y0 + self.side, height), min(self.x0 + self.side, width)
        return (slice(iy0, iy1), slice(ix0, ix1), slice(iy0 - self.y0, iy1 - self.y0), slice(ix0 - self.x0, ix1 - self.x0))

    def extract(self, image: np.ndarray, order: int = 1) -> np.ndarray:
        """The box of a 2D image as a (size, size) float32 array (`order` 0 for masks, 1 for images)."""
        pad = [(max(-self.y0, 0), max(self.y0 + self.side - self.image_shape[0], 0)),
               (max(-self.x0, 0), max(self.x0 + self.side - self.image_shape[1], 0))]
        padded = np.pad(np.asarray(image, dtype=np.float32), pad, mode="edge")
        y0, x0 = self.y0 + pad[0][0], self.x0 + pad[1][0]
        box = padded[y0:y0 + self.side, x0:x0 + self.side]
        if self.side == self.size:
            return box.copy()
        return resize(box, (self.size, self.size), order=order, anti_aliasing=order > 0, preserve_range=True).astype(np.float32)

    def restore(self, patch: np.ndarray, order: int = 1) -> tuple[tuple[slice, slice], np.ndarray]:
        """Map a (size, size) model output back: returns the image region it covers and the values there."""
        box = patch if self.side == self.size else resize(patch, (self.side, self.side), order=order, preserve_range=True)
        iy, ix, by, bx = self._overlap()
        return (iy, ix), np.asarray(box, dtype=np.float32)[by, bx]


def crop_around(mask: np.ndarray, size: int, margin: int = 4) -> SquareCrop:
    """The square crop centred on the bounding box of a 2D mask, `size` pixels or more so the box plus `margin`
    pixels fits. Empty mask -> InputError."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise InputError("cannot crop around an empty region")
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 + 2 * margin
    side = max(size, int(extent))
    centre_y = (rows.min() + rows.max() + 1) // 2
    centre_x = (cols.min() + cols.max() + 1) // 2
    return SquareCrop(int(centre_y - side // 2), int(centre_x - side // 2), side, size, tuple(mask.shape))


@dataclasses.dataclass(frozen=True)
class IntensityScale:
    """Linear map of [low, high] (input units) onto [-1, 1], and back."""

    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray) -> IntensityScale:
        """Min-max scale of an array (the paper scales each image to a fixed range); flat arrays map to 0."""
        low, high = float(np.min(values)), float(np.max(values))
        return cls(low, high if high > low else low + 1.0)

    def forward(self, values: np.ndarray) -> np.ndarray:
        return (2.0 * (np.asarray(values, dtype=np.float32) - self.low) / (self.high - self.low) - 1.0).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return ((np.asarray(values, dtype=np.float64) + 1.0) * 0.5 * (self.high - self.low) + self.low).astype(np.float32)


def to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float results to an image dtype: rounded and clipped to the range of an integer dtype."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return np.asarray(values).astype(dtype)


def percentile_normalise(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Map the [low, high] percentiles of an image to [0, 1] and clip: a contrast-robust input for segmenters."""
    lo, hi = np.percentile(image, [low, high])
    return np.clip((np.asarray(image, dtype=np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def resample_to_spacing(image: np.ndarray, spacing_yx: tuple[float, float], target_mm: float, order: int = 1) -> np.ndarray:
    """Resize a 2D image of pixel spacing (sy, sx) mm to square pixels of `target_mm`."""
    shape = tuple(max(1, round(n * s / target_mm)) for n, s in zip(image.shape, spacing_yx))
    return resize(image, shape, order=order, anti_aliasing=order > 0, preserve_range=True).astype(np.float32)


def pad_to_multiple(images: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pad the last two axes up to a multiple of `multiple`; returns the padded array and the original (y, x)."""
    height, width = images.shape[-2:]
    pad_y, pad_x = -height % multiple, -width % multiple
    padding = [(0, 0)] * (images.ndim - 2) + [(0, pad_y), (0, pad_x)]
    return np.pad(images, padding), (height, width)


def structure_contrast(image: np.ndarray, crop: SquareCrop, spacing_yx: tuple[float, float],
                       smoothing_mm: float = 2.0) -> float:
    """How much a 2D image varies inside `crop` beyond its noise: the SD of the image smoothed by a Gaussian of
    `smoothing_mm` (sigma, mm), over the crop, divided by the crop's mean absolute smoothed intensity (dimensionless).

    0 for a flat crop (constant or all zero); the smoothing keeps pure noise low (Rayleigh noise about 0.1), while
    tissue boundaries (bright blood pool against nulled myocardium on LGE) keep it high.
    """
    sigma = [smoothing_mm / spacing for spacing in spacing_yx]
    box = crop.extract(ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma))
    level = float(np.abs(box).mean())
    return float(box.std()) / level if level > 0 else 0.0


def roi_mask(roi: Volume, label: int | None = None) -> tuple[np.ndarray, str | None]:
    """The boolean (z, y, x) region a user's ROI volume stands for, and a note when it was not a plain binary mask.

    Accepted without `label`: a binary mask ({0, 1}, {0, 255}, {0, any single value}, bool), or a floating-point
    probability map with values in [0, 1], thresholded at > 0.5 (noted). With `label`, the voxels equal to it (a
    label map; noted).

    Raises InputError, naming the file, for NaN / infinite / complex voxels, an empty mask, a label map without
    `label` (listing the labels found), a `label` the map does not hold (listing those it holds), and a probability
    map with no voxel above 0.5.
    """
    roi.require_finite("the ROI mask")
    what = roi.named("the ROI mask")
    values = roi.array
    present = np.unique(values[values != 0])
    if present.size == 0:
        raise InputError(f"{what} is empty (no non-zero voxel); draw the heart ROI")
    if label is not None:
        if not np.any(present == label):
            raise InputError(f"{what} holds no voxel of label {label:g}; labels present: "
                             f"{_list_values(present)}")
        return values == label, f"{what} is a label map: label {label:g} used"
    if present.size == 1:
        return values != 0, None
    if values.dtype.kind == "f" and present.min() > 0 and present.max() <= 1:
        selected = values > PROBABILITY_THRESHOLD
        if not selected.any():
            raise InputError(f"{what} is a probability map (values in 0-1) with no voxel above "
                             f"{PROBABILITY_THRESHOLD}; give a binary mask")
        return selected, f"{what} is a probability map: voxels above {PROBABILITY_THRESHOLD} used"
    raise InputError(f"{what} is not a binary mask: it holds {present.size} different non-zero values "
                     f"({_list_values(present)}); choose the heart ROI's label with --roi-label (roi_label in "
                     "Python), or give a binary mask")


def _list_values(values: np.ndarray, most: int = 12) -> str:
    """Sorted label values for messages: "1, 2, 3" or "1, 2, ..., 900 (250 values)"."""
    shown = [f"{float(value):g}" for value in values]
    if len(shown) <= most:
        return ", ".join(shown)
    return f"{', '.join(shown[: most - 1])}, ..., {shown[-1]} ({len(shown)} values)"


class LVCrop:
    """A square crop of `size` pixels of `pixel_mm` centred at `centre` (row, column; input pixel units) of a slice
    with pixel spacing spacing_yx (mm): `extract` resamples images onto it (bilinear), `paste` resamples a crop back
    onto the slice's pixels (bilinear; 0 outside the crop)."""

    def __init__(self, centre: Sequence[float], spacing_yx: Sequence[float], size: int, pixel_mm: float) -> None:
        self.centre = np.asarray(centre, dtype=float)
        self.spacing = np.asarray(spacing_yx, dtype=float)
        self.size, self.pixel_mm = int(size), float(pixel_mm)

    def record(self) -> dict[str, Any]:
        """The crop as a synthesis records it in its metadata (JSON-ready): centre_rc (row, column; input pixel
        units), size (pixels) and pixel_mm; `from_record` reads it back."""
        return {"centre_rc": [float(value) for value in self.centre], "size": self.size, "pixel_mm": self.pixel_mm}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], spacing_yx: Sequence[float]) -> LVCrop:
        """The crop of a `record` on a slice of pixel spacing spacing_yx (mm)."""
        return cls(record["centre_rc"], spacing_yx, record["size"], record["pixel_mm"])

    def extract(self, images: np.ndarray) -> np.ndarray:
        """(..., y, x) slice images -> (..., size, size) float32 on the crop grid (edge values beyond the slice)."""
        offsets = (np.arange(self.size) - (self.size - 1) / 2.0) * self.pixel_mm
        rows = self.centre[0] + offsets / self.spacing[0]
        cols = self.centre[1] + offsets / self.spacing[1]
        grid = np.meshgrid(rows, cols, indexing="ij")
        flat = np.asarray(images, dtype=np.float32).reshape(-1, *np.shape(images)[-2:])
        out = np.stack([ndimage.map_coordinates(image, grid, order=1, mode="nearest") for image in flat])
        return out.reshape(*np.shape(images)[:-2], self.size, self.size)

    def paste(self, crop: np.ndarray, shape_yx: Sequence[int]) -> np.ndarray:
        """A (size, size) crop back on a slice of shape_yx pixels (float32; 0 outside the crop)."""
        rows, cols = np.mgrid[:shape_yx[0], :shape_yx[1]].astype(float)
        crop_rows = (rows - self.centre[0]) * self.spacing[0] / self.pixel_mm + (self.size - 1) / 2.0
        crop_cols = (cols - self.centre[1]) * self.spacing[1] / self.pixel_mm + (self.size - 1) / 2.0
        inside = (crop_rows >= 0) & (crop_rows <= self.size - 1) & (crop_cols >= 0) & (crop_cols <= self.size - 1)
        values = ndimage.map_coordinates(np.asarray(crop, dtype=np.float32), [crop_rows, crop_cols], order=1,
                                         mode="nearest")
        return np.where(inside, values, 0.0).astype(np.float32)


def cycle_frames(frames: np.ndarray, ed_frame: int, count: int) -> np.ndarray:
    """`count` phases over one heartbeat from ED, linearly interpolated between the cine's frames (the cine read as
    periodic): (t, ...) -> (count, ...) float32."""
    total = frames.shape[0]
    positions = ed_frame + np.arange(count) * total / count
    low = np.floor(positions).astype(int)
    weight = (positions - low).reshape(-1, *([1] * (frames.ndim - 1)))
    return ((1.0 - weight) * frames[low % total] + weight * frames[(low + 1) % total]).astype(np.float32)

"""Shared pre-processing for the 2D slice models: square crops around a region, intensity scaling, and the exact
inverses, so every result is pasted back on its input's voxel grid.

A crop is taken at native resolution when the region fits in `size` pixels (then crop -> paste is exact); a larger
region gets a bigger square box that is resized to `size` and back.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from skimage.transform import resize

from .errors import InputError


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

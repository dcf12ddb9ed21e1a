"""The one image type of the library: a numpy array with its physical geometry and metadata.

Axis order follows numpy / SimpleITK's `GetArrayFromImage`: a 3D volume is (slices, rows, cols) = (z, y, x);
a 4D series is (time, z, y, x). Geometry is given in ITK's LPS convention and in (x, y, z) order:
`spacing` in mm, `origin` in mm (centre of the first voxel), `direction` a row-major 3x3 matrix whose
columns are the x, y, z axis directions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .errors import GeometryError, InputError

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclasses.dataclass
class Volume:
    """An image array with geometry.

    array: (z, y, x) for 3D, (t, z, y, x) for a time series; any numeric dtype.
    spacing: (sx, sy, sz) in mm. origin: (ox, oy, oz) in mm, LPS. direction: 9 floats, row-major 3x3.
    metadata: free-form, JSON-serialisable values (modality, units, inversion_times_ms, trigger_times_ms,
    source file names, ...).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        self.spacing = tuple(float(v) for v in self.spacing)
        self.origin = tuple(float(v) for v in self.origin)
        self.direction = tuple(float(v) for v in np.asarray(self.direction, dtype=float).ravel())
        if self.array.ndim not in (3, 4):
            raise InputError(f"a Volume array must be 3D (z, y, x) or 4D (t, z, y, x); got shape {self.array.shape}")
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise InputError("spacing and origin need 3 values and direction 9 (a 3x3 matrix)")
        if min(self.spacing) <= 0:
            raise InputError(f"voxel spacing must be positive; got {self.spacing}")

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """(z, y, x) shape, whatever the number of time points."""
        return tuple(self.array.shape[-3:])  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, **metadata: Any) -> Volume:
        """A new Volume on the same geometry with another array (same spatial shape) and updated metadata."""
        array = np.asarray(array)
        if array.shape[-3:] != self.spatial_shape:
            raise GeometryError(f"array of spatial shape {array.shape[-3:]} does not fit a grid of {self.spatial_shape}")
        return Volume(array, self.spacing, self.origin, self.direction, {**self.metadata, **metadata})

    def slice_keys(self) -> list[int]:
        """Each slice's position along the slice normal, in 0.01 mm (rounded): a key that names a slice by where it
        lies, the same whether the slice is read alone or inside its stack (used to seed per-slice random draws)."""
        normal = np.reshape(self.direction, (3, 3))[:, 2]
        first = float(np.asarray(self.origin) @ normal)
        return [round(100.0 * (first + z * self.spacing[2])) for z in range(self.spatial_shape[0])]

    def index_to_physical(self) -> np.ndarray:
        """4x4 matrix mapping (x, y, z, 1) voxel indices to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction).reshape(3, 3) * np.asarray(self.spacing)[None, :]
        matrix[:3, 3] = self.origin
        return matrix

    def same_geometry(self, other: Volume, tolerance: float = 1e-4) -> bool:
        """True when both volumes lie on the same spatial voxel grid (see `grid_differences`)."""
        return not self.grid_differences(other, tolerance)

    def grid_differences(self, other: Volume, tolerance: float = 1e-4) -> list[str]:
        """What differs between the two spatial voxel grids: "shape", "spacing", "origin", "direction" (in that
        order; empty when they are the same). A single-slice grid has no slice spacing to compare: tools write
        anything there (ITK 1 mm, DICOM the slice thickness), so only the in-plane spacing counts."""
        if self.spatial_shape != other.spatial_shape:
            return ["shape"]
        compared = 2 if self.spatial_shape[0] == 1 else 3
        checks = (("spacing", self.spacing[:compared], other.spacing[:compared]), ("origin", self.origin, other.origin),
                  ("direction", self.direction, other.direction))
        return [name for name, mine, theirs in checks if not np.allclose(mine, theirs, atol=tolerance)]

    def require_same_geometry(self, other: Volume, what: str = "the two volumes") -> None:
        """Raise GeometryError naming the first difference unless `other` is on this volume's grid. what: the two
        volumes, this one first ("the LGE volume and the ROI mask"); the values are given in that order."""
        differences = self.grid_differences(other)
        if not differences:
            return
        name = differences[0]
        if name == "shape":
            raise GeometryError(f"{what} differ in shape: {self.spatial_shape} vs {other.spatial_shape} (z, y, x)")
        mine, theirs = getattr(self, name), getattr(other, name)
        raise GeometryError(f"{what} differ in {name}: {tuple(round(v, 4) for v in mine)} vs "
                            f"{tuple(round(v, 4) for v in theirs)}")

    def overlaps(self, other: Volume) -> bool:
        """Whether `other`'s voxel grid reaches into this one (bounding box of its corners, in this grid's voxels)."""
        last = np.array(other.spatial_shape[::-1]) - 1
        corners = np.array([[i, j, k, 1.0] for i in (0, last[0]) for j in (0, last[1]) for k in (0, last[2])]).T
        indices = (np.linalg.inv(self.index_to_physical()) @ other.index_to_physical() @ corners)[:3]
        size = np.array(self.spatial_shape[::-1])
        return bool(np.all(indices.max(axis=1) >= -0.5) and np.all(indices.min(axis=1) <= size - 0.5))

    def require_same_frame_of_reference(self, other: Volume, name: str, other_name: str) -> None:
        """GeometryError when both volumes name their DICOM frame of reference (metadata "frame_of_reference_uid",
        from FrameOfReferenceUID) and the two differ: their patient coordinates are unrelated (the patient left the
        table, another session or scanner), so neither equal grids nor resampling by position bring the same tissue
        together. Nothing is checked when either does not say (NIfTI, NRRD, arrays). name / other_name: their roles
        for the message."""
        mine, theirs = self.metadata.get("frame_of_reference_uid"), other.metadata.get("frame_of_reference_uid")
        if mine and theirs and mine != theirs:
            raise GeometryError(f"{name} and {other_name} lie in different DICOM frames of reference "
                                f"(FrameOfReferenceUID {mine} and {theirs}): their positions are not comparable "
                                "(another session, or the patient moved off the table); register them first, or "
                                "give images of one scan session")

    def mask_on_grid(self, mask: Volume | np.ndarray, name: str, grid_name: str, *,
                     allow_empty: bool = False) -> np.ndarray:
        """Boolean (z, y, x) array of `mask`'s non-zero, finite voxels, which must lie on this volume's grid.

        name / grid_name: what the mask and this volume are, for messages ("the blood-pool mask", "the native T1
        map"). A Volume on another grid raises GeometryError saying whether it overlaps at all and what differs; an
        array must have the spatial shape. InputError when the mask selects no voxel, unless `allow_empty`, and when
        it is a label map (several distinct whole-number values: which structure is meant is unknown); a probability
        map (fractional values) is accepted as its non-zero voxels.
        """
        grid_name = self.named(grid_name)
        if isinstance(mask, Volume):
            name = mask.named(name)
            self.require_same_frame_of_reference(mask, grid_name, name)
            if not self.same_geometry(mask) and not self.overlaps(mask):
                raise GeometryError(f"{name} does not overlap {grid_name} (it lies outside its voxels); draw or "
                                    f"resample it on {grid_name}")
            self.require_same_geometry(mask, f"{grid_name} and {name}")
            mask = mask.array
        mask = np.asarray(mask)
        if mask.shape != self.spatial_shape:
            raise GeometryError(f"{name} has shape {mask.shape}; expected {self.spatial_shape} (z, y, x) as "
                                f"{grid_name}")
        selected = np.isfinite(mask) & (mask != 0) if mask.dtype.kind == "f" else mask != 0
        if not allow_empty and not selected.any():
            raise InputError(f"{name} selects no voxel")
        values = np.unique(mask[selected])
        if values.size > 1 and np.all(values == np.round(values)):  # a label map, not a mask or probability map
            shown = ", ".join(f"{value:g}" for value in values[:8]) + (" ..." if values.size > 8 else "")
            raise InputError(f"{name} holds several labels ({shown}): it is a label map, not a mask of one "
                             "structure; give a binary mask (e.g. only the voxels of the structure's label)")
        return selected

    def describe_source(self) -> str:
        """The file(s) the volume was read from, for messages ("/data/lge.nii.gz", "/dicom/IM_1 and 29 more"), or
        "the volume" when it was not read from disk."""
        files = self.metadata.get("source_files") or []
        if not files:
            return "the volume"
        return str(files[0]) + (f" and {len(files) - 1} more" if len(files) > 1 else "")

    def named(self, role: str) -> str:
        """`role` for messages, with the source file(s) when the volume was read from disk: "the mask (/data/m.nrrd)"."""
        return f"{role} ({self.describe_source()})" if self.metadata.get("source_files") else role

    def require_finite(self, what: str) -> None:
        """Raise InputError unless every voxel is a finite real number.

        what: the role of the volume in messages ("the LGE volume"). The message names the source file(s), the
        number of NaN / infinite voxels and the first one's (t, z, y, x) index. Complex voxels are refused too: the
        caller must say which part (magnitude, real) to use.
        """
        if np.iscomplexobj(self.array):
            raise InputError(f"{self.named(what)} holds complex voxels ({self.array.dtype}); give a "
                             "magnitude (or real) image")
        if self.array.dtype.kind != "f":
            return
        bad = ~np.isfinite(self.array)
        if bad.any():
            first = tuple(int(value) for value in np.argwhere(bad)[0])
            raise InputError(f"{self.named(what)} has {int(bad.sum())} NaN or infinite voxel(s), the "
                             f"first at index {first} ({'t, z, y, x' if self.array.ndim == 4 else 'z, y, x'}); fix or "
                             "mask them first")

"""Matching the slices of two short-axis stacks by position, and bringing one stack's images onto the other's slices.

Two series of one scan session (a cine and a MOLLI series, or bSSFP, T2w and LGE) are usually planned at the same
slice positions, but their in-plane grids (field of view, matrix, pixel size) and their slice counts often differ.
A slice of the reference stack is matched to the moving stack's slice whose plane is parallel to it (normals within
MAX_PLANE_ANGLE_DEG) and nearest to the centre of the reference slice's field of view (distance along the moving
plane's normal), when that distance is within `tolerance_mm` (default half the larger slice thickness: the two slices
then image mostly the same tissue; measured at the centre, where the heart is, so a slight tilt between the stacks
does not shift the match); the moving slice's images are then
resampled in its own plane onto the reference slice's pixels (bilinear), each reference pixel taking the value at its
orthogonal projection onto the moving plane. Slices are never interpolated across the normal: 6-10 mm apart, the
neighbours hold other anatomy. Reference slices without a match are left out and named.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from .errors import GeometryError
from .volume import Volume

MAX_PLANE_ANGLE_DEG = 5.0


@dataclasses.dataclass(frozen=True)
class SliceMatch:
    """Reference slice `reference` is imaged by moving slice `moving`, `distance_mm` apart along the normal."""

    reference: int
    moving: int
    distance_mm: float


def slice_thickness_mm(volume: Volume) -> float:
    """The slice thickness of a stack: metadata "slice_thickness_mm" where it was recorded (DICOM SliceThickness when
    every image states the same, the phantom, our derived series) or else the slice spacing (gap included)."""
    return float(volume.metadata.get("slice_thickness_mm") or volume.spacing[2])


def _normal(volume: Volume) -> np.ndarray:
    return np.reshape(volume.direction, (3, 3))[:, 2]


def _slice_centres(volume: Volume) -> np.ndarray:
    """(z, 3) LPS mm of the centre of each slice's field of view (the in-plane centre pixel)."""
    rows, cols = volume.spatial_shape[1:]
    to_physical = volume.index_to_physical()
    return np.array([(to_physical @ np.array([(cols - 1) / 2.0, (rows - 1) / 2.0, z, 1.0]))[:3]
                     for z in range(volume.spatial_shape[0])])


def match_slices(reference: Volume, moving: Volume, *, reference_name: str = "the reference",
                 moving_name: str = "the moving images", tolerance_mm: float | None = None
                 ) -> tuple[list[SliceMatch], list[str]]:
    """The moving slice of each reference slice (module docstring), and notes naming the reference slices left out.

    reference, moving: (z, y, x) or (t, z, y, x) Volumes (only the geometry is used). GeometryError when their DICOM
    frames of reference differ, their planes are not parallel, or no reference slice has a moving slice within
    tolerance (the message gives both stacks' slice positions).
    """
    reference.require_same_frame_of_reference(moving, reference.named(reference_name), moving.named(moving_name))
    normal = _normal(reference)
    angle = float(np.degrees(np.arccos(min(1.0, abs(float(normal @ _normal(moving)))))))
    if angle > MAX_PLANE_ANGLE_DEG:
        raise GeometryError(f"{moving.named(moving_name)} is not in the plane of {reference.named(reference_name)}: "
                            f"their slices are {angle:.1f} degrees apart (at most {MAX_PLANE_ANGLE_DEG:g}); give "
                            "images of the same short-axis stack")
    tolerance = (0.5 * max(slice_thickness_mm(reference), slice_thickness_mm(moving)) if tolerance_mm is None
                 else float(tolerance_mm))
    centres, moving_centres = _slice_centres(reference), _slice_centres(moving)
    moving_normal = _normal(moving)
    moving_planes = moving_centres @ moving_normal  # each moving plane: points p with p . n = this
    matches, unmatched = [], []
    for z, centre in enumerate(centres):
        distances = np.abs(centre @ moving_normal - moving_planes)  # from the reference slice's centre to each plane
        nearest = int(np.argmin(distances))
        if distances[nearest] <= tolerance:
            matches.append(SliceMatch(z, nearest, float(distances[nearest])))
        else:
            unmatched.append(z)
    if not matches:
        raise GeometryError(
            f"no slice of {reference.named(reference_name)} lies within {tolerance:.1f} mm of a slice of "
            f"{moving.named(moving_name)} (positions along the normal: "
            f"{', '.join(f'{value:.1f}' for value in centres @ normal)} mm against "
            f"{', '.join(f'{value:.1f}' for value in moving_centres @ normal)} mm): they image different parts of the "
            "heart")
    notes = []
    if unmatched:
        notes.append(f"{len(unmatched)} slice(s) of {reference_name} ({', '.join(str(z + 1) for z in unmatched)}, "
                     f"counted from 1) have no slice of {moving_name} within {tolerance:.1f} mm: left out")
    return matches, notes


def resample_slice(images: np.ndarray, moving: Volume, moving_slice: int, reference: Volume, reference_slice: int,
                   outside: float = np.nan) -> np.ndarray:
    """Images (c, y, x) of moving slice `moving_slice`, bilinearly resampled in their plane at the orthogonal
    projections of the pixels of reference slice `reference_slice`: (c, Y, X) float32 on the reference slice's
    pixels, `outside` where the projection falls outside the moving slice."""
    images = np.asarray(images, dtype=np.float32)
    rows, cols = reference.spatial_shape[1:]
    index = np.stack(np.meshgrid(np.arange(cols, dtype=float), np.arange(rows, dtype=float), indexing="xy"))
    points = np.stack([index[0].ravel(), index[1].ravel(), np.full(rows * cols, float(reference_slice)),
                       np.ones(rows * cols)])
    physical = reference.index_to_physical() @ points
    moving_index = np.linalg.inv(moving.index_to_physical()) @ physical  # (x, y, z, 1); z dropped: projection
    coordinates = [moving_index[1].reshape(rows, cols), moving_index[0].reshape(rows, cols)]
    inside = ((coordinates[0] >= -0.5) & (coordinates[0] <= images.shape[-2] - 0.5)
              & (coordinates[1] >= -0.5) & (coordinates[1] <= images.shape[-1] - 0.5))
    out = np.stack([ndimage.map_coordinates(image, coordinates, order=1, mode="nearest") for image in images])
    return np.where(inside, out, np.float32(outside)).astype(np.float32)


def onto_reference_slices(images: np.ndarray, moving: Volume, reference: Volume, *,
                          reference_name: str = "the reference", moving_name: str = "the moving images",
                          tolerance_mm: float | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Moving-stack images (c, z, y, x) on the reference stack's slices: (c, Z, Y, X) float32 (0 where not
    covered), covered (Z, Y, X) bool, and notes (slices left out; how far matched slices lie apart and whether they
    were resampled). moving: the Volume giving the images' geometry. Errors as `match_slices`."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != moving.spatial_shape:
        raise GeometryError(f"the images to bring onto {reference_name} have shape {images.shape}; expected (channels, "
                            f"{', '.join(str(n) for n in moving.spatial_shape)}): channels first, then the (z, y, x) "
                            f"grid of {moving.named(moving_name)}")
    matches, notes = match_slices(reference, moving, reference_name=reference_name, moving_name=moving_name,
                                  tolerance_mm=tolerance_mm)
    out = np.zeros((images.shape[0], *reference.spatial_shape), np.float32)
    covered = np.zeros(reference.spatial_shape, bool)
    same_grid = reference.same_geometry(moving)
    for match in matches:
        if same_grid:
            out[:, match.reference] = images[:, match.moving]
            covered[match.reference] = True
            continue
        values = resample_slice(images[:, match.moving], moving, match.moving, reference, match.reference)
        covered[match.reference] = np.isfinite(values[0])
        out[:, match.reference] = np.nan_to_num(values, nan=0.0)
    if not same_grid:
        farthest = max(match.distance_mm for match in matches)
        notes.append(f"{moving_name} resampled in-plane onto {len(matches)} slice(s) of {reference_name} (pixels "
                     f"{moving.spacing[0]:g} x {moving.spacing[1]:g} mm onto {reference.spacing[0]:g} x "
                     f"{reference.spacing[1]:g} mm; matched slices up to {farthest:.1f} mm apart)")
    return out, covered, notes

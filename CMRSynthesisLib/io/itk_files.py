"""NIfTI / NRRD / MetaImage files through SimpleITK, and the Volume <-> SimpleITK image conversion.

A 4D Volume (t, z, y, x) becomes a 4D scalar image whose 4th axis has spacing 1 and origin 0; reading keeps
the spatial (first three) axes' geometry. Volume metadata other than geometry is not stored in these files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..volume import Volume

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")  # single-file formats (a .nhdr has a separate data file)


def itk_suffix(path: str | Path, suffixes: tuple[str, ...] = READ_SUFFIXES) -> str | None:
    """The file-type suffix of `path` among `suffixes` (case-insensitive), or None."""
    name = Path(path).name.lower()
    return next((suffix for suffix in suffixes if name.endswith(suffix)), None)


def error_reason(err: Exception) -> str:
    """The last non-empty line of an exception message (SimpleITK puts source locations first)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def read_itk_file(path: str | Path) -> Volume:
    """Read a scalar 2D, 3D or 4D image file into a Volume (a 2D image becomes one slice)."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise InputError(f"{path}: SimpleITK cannot read this image file ({error_reason(err)})") from err
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} values per voxel; "
                         "expected a scalar (grey-level) image")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    dimension = image.GetDimension()
    if dimension not in (3, 4):
        raise InputError(f"{path}: is a {dimension}D image; expected 2D, 3D or 4D")
    direction = np.reshape(image.GetDirection(), (dimension, dimension))[:3, :3]
    return Volume(sitk.GetArrayFromImage(image), image.GetSpacing()[:3], image.GetOrigin()[:3], direction,
                  {"source_files": [str(path)]})


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with the Volume's array (bool stored as uint8) and geometry; 4D gets a 4th unit axis."""
    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    image = sitk.GetImageFromArray(array, isVector=False)
    extra = array.ndim - 3
    direction = np.eye(array.ndim)
    direction[:3, :3] = np.reshape(volume.direction, (3, 3))
    image.SetSpacing(list(volume.spacing) + [1.0] * extra)
    image.SetOrigin(list(volume.origin) + [0.0] * extra)
    image.SetDirection(direction.ravel().tolist())
    return image

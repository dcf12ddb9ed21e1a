"""NIfTI / NRRD / MetaImage files, and the Volume <-> SimpleITK image conversion.

Reading is faithful: a Volume holds the values stored in the file, NaN and infinities included, so that the
commands can refuse them (`Volume.require_finite`). SimpleITK reads every format's geometry and the voxels of NRRD
and MetaImage files; NIfTI voxels come through nibabel, because ITK's NIfTI reader silently turns NaN and infinite
values into 0. NIfTI scaling (scl_slope, scl_inter) is applied as ITK applies it: scaled data become float32
(float64 when stored as float64). Libraries print nothing while a file is read; every problem is an InputError.

A 4D Volume (t, z, y, x) becomes a 4D scalar image whose 4th axis has spacing 1 and origin 0; reading keeps
the spatial (first three) axes' geometry. Volume metadata other than geometry is not stored in these files.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import struct
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.nifti1 import data_type_codes

from ..errors import InputError
from ..volume import Volume

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")  # single-file formats (a .nhdr has a separate data file)
# NIfTI datatype codes read: the real scalar types (uint8, int16, int32, float32, float64, int8, uint16, uint32,
# int64, uint64). Complex codes (complex64, complex128, complex256) are refused as complex; any other code (binary,
# RGB, RGBA, float128, unknown) as an unsupported datatype.
NIFTI_REAL_DATATYPES = (2, 4, 8, 16, 64, 256, 512, 768, 1024, 1280)
NIFTI_COMPLEX_DATATYPES = (32, 1792, 2048)
_COMPLEX_PIXELS = (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64)


def itk_suffix(path: str | Path, suffixes: tuple[str, ...] = READ_SUFFIXES) -> str | None:
    """The file-type suffix of `path` among `suffixes` (case-insensitive), or None."""
    name = Path(path).name.lower()
    return next((suffix for suffix in suffixes if name.endswith(suffix)), None)


def error_reason(err: Exception) -> str:
    """The last non-empty line of an exception message (SimpleITK puts source locations first)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def read_itk_file(path: str | Path, *, components_as_time: bool = False) -> Volume:
    """Read a scalar 2D, 3D or 4D image file (READ_SUFFIXES) into a Volume (a 2D image becomes one slice).

    components_as_time: a 2D / 3D file with several values per voxel (as Slicer writes a volume sequence to NRRD,
    "kinds: list domain domain domain") becomes a 4D (t, z, y, x) Volume, one time point per value.

    The array holds the file's values: its dtype (NIfTI scaled by scl_slope / scl_inter: float32, or float64 for
    float64 data), NaN and infinite voxels kept. Raises InputError naming the file for an unreadable file, a NIfTI-2
    file, a NIfTI datatype other than a real scalar one, complex voxels, several values per voxel, or more than 4
    dimensions.
    """
    if itk_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_datatype(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _libraries_quiet():
            reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"{path}: SimpleITK cannot read this image file ({error_reason(err)})") from err
    if reader.GetPixelID() in _COMPLEX_PIXELS:
        raise InputError(f"{path}: holds complex voxels ({sitk.GetPixelIDValueAsString(reader.GetPixelID())}); "
                         "give a magnitude (or real) image")
    dimension, components = reader.GetDimension(), reader.GetNumberOfComponents()
    as_time = components > 1 and components_as_time and dimension in (2, 3) and not itk_suffix(path).startswith(".nii")
    if components != 1 and not as_time:
        raise InputError(f"{path}: has {components} values per voxel; expected a scalar (grey-level) image")
    if dimension not in (2, 3, 4):
        raise InputError(f"{path}: is a {dimension}D image; expected 2D, 3D or 4D")
    shape = tuple(reversed(reader.GetSize()))
    array = _read_nifti_voxels(path, shape) if itk_suffix(path) in (".nii", ".nii.gz") else _read_itk_voxels(reader)
    if as_time:  # (..., values) -> (values, ...)
        array = np.moveaxis(array, -1, 0)
    spacing, origin = reader.GetSpacing(), reader.GetOrigin()
    direction = np.eye(3)
    if dimension == 2:  # one slice: unit spacing and origin 0 along z, as SimpleITK's JoinSeries gives
        array, spacing, origin = np.expand_dims(array, -3), (*spacing, 1.0), (*origin, 0.0)
        direction[:2, :2] = np.reshape(reader.GetDirection(), (2, 2))
    else:
        direction = np.reshape(reader.GetDirection(), (dimension, dimension))[:3, :3]
    return Volume(array, spacing[:3], origin[:3], direction, {"source_files": [str(path)]})


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


def resample_onto(moving: Volume, reference: Volume, outside: float) -> np.ndarray:
    """The values of a 3D volume at the voxels of another (z, y, x) grid, by linear interpolation in patient space
    (float32, `outside` where `moving` does not reach): a map acquired at other positions or pixel spacing brought
    onto a reference grid."""
    values = sitk.Resample(to_sitk(moving.with_array(moving.array.astype(np.float32))),
                           to_sitk(reference.with_array(np.zeros(reference.spatial_shape, np.float32))),
                           sitk.Transform(), sitk.sitkLinear, float(outside), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(values)


@contextlib.contextmanager
def _libraries_quiet() -> Iterator[None]:
    """Silence ITK's warnings and nibabel's log messages (both go to stderr) for the duration of a read."""
    warnings = sitk.ProcessObject_GetGlobalWarningDisplay()
    level = nib.imageglobals.logger.level
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    nib.imageglobals.logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        sitk.ProcessObject_SetGlobalWarningDisplay(warnings)
        nib.imageglobals.logger.setLevel(level)


def _check_nifti_datatype(path: str | Path) -> None:
    """Raise InputError unless `path` starts with a NIfTI-1 header of a real scalar datatype (NIFTI_REAL_DATATYPES).

    Read from the header bytes before any library sees the file: ITK's NIfTI library prints to stderr on a
    datatype it does not know.
    """
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(72)
    except (OSError, EOFError) as err:
        raise InputError(f"{path}: cannot read this NIfTI file ({error_reason(err)})") from err
    sizes = [struct.unpack_from(f"{order}i", header)[0] for order in "<>"] if len(header) == 72 else []
    if 540 in sizes:
        raise InputError(f"{path}: is a NIfTI-2 file, which SimpleITK does not read; save it as NIfTI-1")
    if 348 not in sizes:
        raise InputError(f"{path}: not a NIfTI file (no NIfTI-1 header)")
    datatype = struct.unpack_from("<h" if sizes[0] == 348 else ">h", header, 70)[0]  # the size tells the byte order
    name = data_type_codes.label[datatype] if datatype in data_type_codes.code else "unknown"
    if datatype in NIFTI_COMPLEX_DATATYPES:
        raise InputError(f"{path}: holds complex voxels (NIfTI datatype {datatype}, {name}); give a magnitude (or "
                         "real) image")
    if datatype not in NIFTI_REAL_DATATYPES:
        raise InputError(f"{path}: unsupported NIfTI datatype {datatype} ({name}); this tool reads real scalar "
                         "images (8- to 64-bit integers, float32, float64)")


def _read_nifti_voxels(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """The voxels of a NIfTI file as stored (scaled by scl_slope / scl_inter), in numpy order `shape`."""
    try:
        with _libraries_quiet():
            image = nib.load(path, mmap=False)
            array = np.asanyarray(image.dataobj)
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError,
            nib.spatialimages.HeaderDataError) as err:
        raise InputError(f"{path}: cannot read the NIfTI voxels ({' '.join(str(err).split())})") from err
    if array.size != int(np.prod(shape)):
        raise InputError(f"{path}: holds {array.size} voxels ({array.shape}, x first) where its header describes an "
                         f"image of {shape} (z, y, x)")
    if image.dataobj.slope != 1 or image.dataobj.inter != 0:  # scaled: float32 as ITK gives it, unless float64
        stored = image.get_data_dtype()
        array = array.astype(np.float64 if stored.kind == "f" and stored.itemsize == 8 else np.float32)
    # nibabel's axes are (x, y, z, t); reversing them gives numpy's (t, z, y, x) order.
    return np.ascontiguousarray(array.T.reshape(shape), dtype=array.dtype.newbyteorder("="))


def _read_itk_voxels(reader: sitk.ImageFileReader) -> np.ndarray:
    """The voxels of the file `reader` names (its information read), as SimpleITK reads them."""
    try:
        with _libraries_quiet():
            image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"{reader.GetFileName()}: SimpleITK cannot read this image file "
                         f"({error_reason(err)})") from err
    return sitk.GetArrayFromImage(image)

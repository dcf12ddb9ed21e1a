"""Reading and writing volumes: DICOM (pydicom), NIfTI (nibabel values, SimpleITK geometry), NRRD / MetaImage (SimpleITK)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..volume import Volume
from .cine import check_cine, read_cine, read_cine_frames, write_cine
from .derived_series import DerivedSeries, write_derived_series
from .dicom import is_dicom_file, read_dicom_series
from .itk_files import READ_SUFFIXES, itk_suffix, read_itk_file
from .output import OUTPUT_FORMATS, write_output
from .writing import atomic_write_bytes, check_output_paths, file_sha256, same_file, write_volume, write_volumes

__all__ = ["atomic_write_bytes", "check_output_paths", "file_sha256", "read_dicom_series", "read_volume",
           "same_file", "write_volume", "write_volumes"]
__all__ += ["check_cine", "read_cine", "read_cine_frames", "write_cine"]
__all__ += ["OUTPUT_FORMATS", "DerivedSeries", "write_derived_series", "write_output"]


def read_volume(path: str | Path) -> Volume:
    """Read an image from disk into a Volume.

    A folder (sub-folders included) is read as one DICOM series; a DICOM file (recognised by content, whatever its name) as that single
    (single- or multi-frame) DICOM file; *.nii, *.nii.gz, *.nrrd, *.nhdr, *.mha (see itk_files.read_itk_file).
    Anything else, or an unreadable file, raises InputError naming the file and the reason.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    if itk_suffix(path):
        return read_itk_file(path)
    if is_dicom_file(path):
        return read_dicom_series([path])
    raise InputError(f"{path}: not an image file this tool reads (expected a DICOM file or folder, or "
                     f"{', '.join(READ_SUFFIXES)})")

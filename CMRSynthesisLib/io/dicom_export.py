"""Writing a Volume as a DICOM MR series: one single-frame MR Image Storage file per slice and frame, with the
geometry a scanner writes (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) and per-frame elements
(InversionTime, TriggerTime, AcquisitionTime, ...).

`write_mr_images` is the one writer: it lays out the images, stores the values (rescaled where needed) and writes
the folder all or nothing. `write_dicom_series` gives it the header of a synthetic phantom series;
`derived_series.write_derived_series` the header of a synthetic or derived series for PACS.
"""

from __future__ import annotations

import copy
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ..errors import InputError, OutputError
from ..volume import Volume
from .writing import check_writable_folder

PerImage = Callable[[int, int], Mapping[str, Any]]  # (t, z) -> DICOM keyword -> value for that image


def write_dicom_series(images: Volume, folder: str | Path, *, description: str,
                       frame_elements: Sequence[Mapping[str, Any]] = (), image_type: Sequence[str] = (
                           "DERIVED", "SECONDARY", "SYNTHETIC"), series_number: int = 1001,
                       study_uid: str | None = None, comment: str = "synthetic image") -> list[Path]:
    """Write `images` ((z, y, x), or (t, z, y, x) with t frames per slice) into a new folder, all or nothing, as a
    series of the synthetic patient "SYNTHETIC^PHANTOM" (the phantom's studies; for a derived series of a real study
    see `derived_series.write_derived_series`).

    frame_elements: for a 4D volume, one mapping of DICOM keyword -> value per frame, set on every slice of that
    frame (e.g. {"InversionTime": 100.0}). Values are stored as `write_mr_images` says. Returns the paths written.

    Raises InputError for complex or non-finite voxels or a wrong number of frame_elements, OutputError when the
    folder exists and is not empty or cannot be created.
    """
    images.require_finite("the image to export")
    count = images.array.shape[0] if images.array.ndim == 4 else 1
    if frame_elements and len(frame_elements) != count:
        raise InputError(f"{len(frame_elements)} sets of frame elements for {count} frames")
    header = Dataset()
    header.Modality = "MR"
    header.PatientName, header.PatientID = "SYNTHETIC^PHANTOM", "SYNTHETIC"
    header.StudyInstanceUID = study_uid or generate_uid()
    header.SeriesInstanceUID, header.FrameOfReferenceUID = generate_uid(), generate_uid()
    header.SeriesDescription, header.SeriesNumber = description[:64], series_number
    header.ImageType = list(image_type)
    header.ImageComments = comment[:10240]
    header.BurnedInAnnotation = "NO"
    if "field_strength_t" in images.metadata:
        header.MagneticFieldStrength = images.metadata["field_strength_t"]
    return write_mr_images(images, folder, header, lambda t, z: frame_elements[t] if frame_elements else {})


def write_mr_images(images: Volume, folder: str | Path, header: Dataset, per_image: PerImage | None = None, *,
                    always_rescale: bool = False) -> list[Path]:
    """Write `images` as single-frame MR Image Storage files (PS3.3 A.4) into a new folder, all or nothing.

    images: (z, y, x), or (t, z, y, x) with t frames per slice; finite real voxels. header: the elements every
    file shares (identifiers, descriptions, ...), copied into each. per_image(t, z): the elements of one image
    (t = 0 for a 3D volume), set last. This writer adds the SOP Common identifiers (a new SOPInstanceUID per file,
    PS3.3 C.12.1), InstanceNumber (C.7.6.1), the Image Plane module from the geometry (C.7.6.2: PixelSpacing,
    ImageOrientationPatient, ImagePositionPatient, SliceThickness from metadata "slice_thickness_mm" or the slice
    spacing, SpacingBetweenSlices, SliceLocation) and the Image Pixel module (C.7.6.3: 16-bit MONOCHROME2).
    Integer voxels within int16 / uint16 are stored as they are; other values as uint16 from their minimum with
    RescaleSlope / RescaleIntercept (RescaleType from the header, else "US"; the quantisation error is at most half
    the slope);
    `always_rescale` writes slope 1 and intercept 0 where none is needed. Files are IM_00001.dcm, ... in slice-major
    order (all frames of the first slice first), InstanceNumber counting the same way. Returns the paths written.

    Raises OutputError when `folder` is a file, exists and is not empty, or cannot be created; nothing is left
    behind on any error.
    """
    folder = Path(folder)
    check_new_folder(folder)
    frames = images.array if images.array.ndim == 4 else images.array[None]
    stored, slope, intercept = stored_values(frames)
    if slope is None and always_rescale:
        slope, intercept = "1", "0"
    direction = np.reshape(images.direction, (3, 3))
    partial = folder.with_name(f".{folder.name}-{uuid.uuid4().hex[:12]}.partial")
    partial.mkdir(parents=True)
    names = []
    try:
        for z in range(frames.shape[1]):
            position = np.asarray(images.origin) + direction[:, 2] * images.spacing[2] * z
            for t in range(frames.shape[0]):
                instance = z * frames.shape[0] + t + 1
                dataset = _image_dataset(stored[t, z], images, header)
                dataset.InstanceNumber = instance
                dataset.ImagePositionPatient = [round(float(v), 6) for v in position]
                dataset.ImageOrientationPatient = [round(float(v), 8) for v in (*direction[:, 0], *direction[:, 1])]
                dataset.SliceLocation = round(float(position @ direction[:, 2]), 6)
                if slope is not None:
                    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
                    dataset.RescaleType = header.get("RescaleType") or "US"
                for keyword, value in (per_image(t, z) if per_image else {}).items():
                    setattr(dataset, keyword, value)
                name = f"IM_{instance:05d}.dcm"
                dataset.save_as(partial / name, enforce_file_format=True)
                names.append(name)
        if folder.exists():
            folder.rmdir()
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return [folder / name for name in names]


def check_new_folder(folder: str | Path) -> None:
    """Raise OutputError unless `folder` can be a new DICOM series folder: absent or empty, and creatable."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file; give a new folder for the DICOM series")
    if folder.exists() and any(folder.iterdir()):
        raise OutputError(f"{folder}: the folder exists and is not empty; choose a new one for the DICOM series")
    check_writable_folder(folder.parent, folder)


STORED_MAX = 65535  # rescaled values are stored as uint16 0..STORED_MAX (half a slope at most is lost)


def storage(frames: np.ndarray) -> tuple[np.dtype, str | None, str | None]:
    """How `frames` (any shape, finite real values) are stored: the stored dtype and, when the values must be
    rescaled, RescaleSlope and RescaleIntercept as DS text (None otherwise). Integers within int16 (else uint16) are
    kept; anything else becomes uint16 spanning 0..STORED_MAX with intercept min and slope (max - min) / STORED_MAX,
    so the minimum (e.g. the 0 of a synthetic image outside its crops) reads back exactly."""
    dtype, slope, intercept = _rescale(frames)
    if slope is None:
        return dtype, None, None
    return dtype, _decimal(slope), _decimal(intercept)


def stored_values(frames: np.ndarray) -> tuple[np.ndarray, str | None, str | None]:
    """The pixel values to store and, when they had to be rescaled, RescaleSlope and RescaleIntercept (see
    `storage`)."""
    dtype, slope, intercept = _rescale(frames)
    if slope is None:
        return frames.astype(dtype), None, None
    stored = np.clip(np.rint((frames - intercept) / slope), 0, STORED_MAX).astype(dtype)
    return stored, _decimal(slope), _decimal(intercept)


def _rescale(frames: np.ndarray) -> tuple[np.dtype, float | None, float | None]:
    """The stored dtype and the rescale slope and intercept (None when the values are stored as they are)."""
    if frames.dtype.kind in "iub":
        low, high = int(frames.min()), int(frames.max())
        if low >= np.iinfo(np.int16).min and high <= np.iinfo(np.int16).max:
            return np.dtype(np.int16), None, None
        if low >= 0 and high <= np.iinfo(np.uint16).max:
            return np.dtype(np.uint16), None, None
    low = float(_decimal(float(frames.min())))  # the intercept as the header will hold it
    slope = float(_decimal(max((float(frames.max()) - low) / STORED_MAX, 1e-12)))
    return np.dtype(np.uint16), slope, low


def _decimal(value: float) -> str:
    """A number as DS text (at most 16 characters)."""
    return f"{value:.10g}"[:16]


def new_dataset(sop_class: str) -> Dataset:
    """An empty data set of `sop_class` with its file meta (explicit VR little endian) and a fresh SOP instance UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return dataset


def _image_dataset(pixels: np.ndarray, images: Volume, header: Dataset) -> Dataset:
    """One MR image: the header's elements, then the pixel spacing, slice thickness and pixel data."""
    dataset = new_dataset(MRImageStorage)
    for element in header:
        dataset.add(copy.deepcopy(element))
    dataset.PixelSpacing = [round(images.spacing[1], 6), round(images.spacing[0], 6)]  # row spacing, column spacing
    thickness = images.metadata.get("slice_thickness_mm", images.spacing[2])
    dataset.SliceThickness, dataset.SpacingBetweenSlices = round(float(thickness), 6), round(images.spacing[2], 6)
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    dataset.PixelData = np.ascontiguousarray(pixels).tobytes()
    return dataset

"""Writing a Volume as a DICOM MR series: one single-frame MR Image Storage file per slice and frame, with the
geometry a scanner writes (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) and per-frame elements
(InversionTime, TriggerTime, AcquisitionTime, ...)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ..errors import InputError, OutputError
from ..volume import Volume
from .writing import check_writable_folder


def write_dicom_series(images: Volume, folder: str | Path, *, description: str,
                       frame_elements: Sequence[Mapping[str, Any]] = (), image_type: Sequence[str] = (
                           "DERIVED", "SECONDARY", "SYNTHETIC"), series_number: int = 1001,
                       study_uid: str | None = None, comment: str = "synthetic image") -> list[Path]:
    """Write `images` ((z, y, x), or (t, z, y, x) with t frames per slice) into a new folder, all or nothing.

    frame_elements: for a 4D volume, one mapping of DICOM keyword -> value per frame, set on every slice of that
    frame (e.g. {"InversionTime": 100.0}). Integer voxels within int16 / uint16 are stored as they are; other values
    as int16 with RescaleSlope / RescaleIntercept. Files are IM_00001.dcm, ... in slice-major order (all frames of the
    first slice first), InstanceNumber counting the same way. Returns the paths written.

    Raises InputError for complex or non-finite voxels or a wrong number of frame_elements, OutputError when the
    folder exists and is not empty or cannot be created.
    """
    folder = Path(folder)
    images.require_finite("the image to export")
    frames = images.array if images.array.ndim == 4 else images.array[None]
    if frame_elements and len(frame_elements) != len(frames):
        raise InputError(f"{len(frame_elements)} sets of frame elements for {len(frames)} frames")
    if folder.exists() and any(folder.iterdir()):
        raise OutputError(f"{folder}: the folder exists and is not empty; choose a new one for the DICOM series")
    check_writable_folder(folder.parent, folder)
    stored, slope, intercept = _stored_values(frames)
    study_uid = study_uid or generate_uid()
    series_uid, frame_of_reference = generate_uid(), generate_uid()
    direction = np.reshape(images.direction, (3, 3))
    partial = folder.with_name(f".{folder.name}-{uuid.uuid4().hex[:12]}.partial")
    partial.mkdir(parents=True)
    names = []
    try:
        for z in range(frames.shape[1]):
            position = np.asarray(images.origin) + direction[:, 2] * images.spacing[2] * z
            for t in range(frames.shape[0]):
                instance = z * frames.shape[0] + t + 1
                dataset = _dataset(stored[t, z], images, description, image_type, series_number, comment)
                dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
                dataset.FrameOfReferenceUID = frame_of_reference
                dataset.InstanceNumber = instance
                dataset.ImagePositionPatient = [round(float(v), 6) for v in position]
                dataset.ImageOrientationPatient = [round(float(v), 8) for v in (*direction[:, 0], *direction[:, 1])]
                dataset.SliceLocation = round(float(position @ direction[:, 2]), 6)
                if slope is not None:
                    dataset.RescaleSlope, dataset.RescaleIntercept, dataset.RescaleType = slope, intercept, "US"
                for keyword, value in (frame_elements[t] if frame_elements else {}).items():
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


def _stored_values(frames: np.ndarray) -> tuple[np.ndarray, str | None, str | None]:
    """The pixel values to store and, when they had to be rescaled, RescaleSlope and RescaleIntercept (as DS text)."""
    if frames.dtype.kind in "iub":
        low, high = int(frames.min()), int(frames.max())
        if low >= np.iinfo(np.int16).min and high <= np.iinfo(np.int16).max:
            return frames.astype(np.int16), None, None
        if low >= 0 and high <= np.iinfo(np.uint16).max:
            return frames.astype(np.uint16), None, None
    low, high = float(frames.min()), float(frames.max())
    slope = max((high - low) / 60000.0, 1e-12)
    intercept = low + 30000.0 * slope
    stored = np.clip(np.rint((frames - intercept) / slope), -32768, 32767).astype(np.int16)
    return stored, f"{slope:.10g}"[:16], f"{intercept:.10g}"[:16]


def new_dataset(sop_class: str) -> Dataset:
    """An empty data set of `sop_class` with its file meta (explicit VR little endian) and a fresh SOP instance UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return dataset


def _dataset(pixels: np.ndarray, images: Volume, description: str, image_type: Sequence[str], series_number: int,
             comment: str) -> Dataset:
    dataset = new_dataset(MRImageStorage)
    dataset.Modality = "MR"
    dataset.PatientName, dataset.PatientID = "SYNTHETIC^PHANTOM", "SYNTHETIC"
    dataset.SeriesDescription, dataset.SeriesNumber = description[:64], series_number
    dataset.ImageType = list(image_type)
    dataset.ImageComments = comment[:10240]
    dataset.BurnedInAnnotation = "NO"
    dataset.PixelSpacing = [round(images.spacing[1], 6), round(images.spacing[0], 6)]  # row spacing, column spacing
    thickness = images.metadata.get("slice_thickness_mm", images.spacing[2])
    dataset.SliceThickness, dataset.SpacingBetweenSlices = round(float(thickness), 6), round(images.spacing[2], 6)
    if "field_strength_t" in images.metadata:
        dataset.MagneticFieldStrength = images.metadata["field_strength_t"]
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    dataset.PixelData = np.ascontiguousarray(pixels).tobytes()
    return dataset

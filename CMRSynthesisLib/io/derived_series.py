"""A synthetic or derived image as a DICOM series that says what it is, for PACS.

`write_derived_series` writes any Volume our methods make (a synthetic LGE, a T1 map from cine, a fitted map, a
synthetic cine) as a new series of single-frame MR Image Storage files (PS3.3 A.4) that a PACS files in the source
study and that no reader can take for scanner data:

- what it is: ImageType DERIVED\\SECONDARY\\<kind>[\\SYNTHETIC] (PS3.3 C.7.6.1.1.2; <kind> is MR's Value 3, C.8.3.1.1.1:
  "T1 MAP", "T2 MAP" or "OTHER"), SeriesDescription starting "SYNTHETIC " (made by a generative model: not a
  measurement) or "DERIVED " (computed from measurements, e.g. a T1 fit), ImageComments and DerivationDescription in
  words, BurnedInAnnotation NO;
- who made it, how: Manufacturer / ManufacturerModelName / SoftwareVersions (General Equipment, C.7.5.1) name
  CMRSynthesis and its version; the method and checkpoint go in DerivationDescription (General Reference, C.12.4)
  and in a ContributingEquipmentSequence item (SOP Common, C.12.1) whose purpose is DCM 109100 "Synthesizing
  Equipment" (synthetic) or DCM 109102 "Processing Equipment" (derived);
- what it came from: ReferencedSeriesSequence (Common Instance Reference, C.12.2) lists every source instance by
  series; SourceImageSequence (General Reference, C.12.4) on each image lists the source images of its slice (and
  of its frame, for a cine made from a cine of as many frames), purpose DCM 121322;
- whose it is: the source study's patient and study attributes (PATIENT_STUDY_KEYWORDS) kept, new Series and SOP
  Instance UIDs; FrameOfReferenceUID kept when the output lies on the source's geometry (every output slice is in
  the plane of source images: parallel, within half a slice spacing), a new one otherwise;
- its values: float values as int16 with RescaleSlope / RescaleIntercept (quantisation error at most half the
  slope), RescaleType holding the units (e.g. "ms", which our reader returns as metadata "units"), and, for units
  UCUM names, a RealWorldValueMappingSequence item at the top level (the item macro of PS3.3 C.7.6.16.2.11) with
  MeasurementUnitsCodeSequence and the quantity (T1, T2, T2*; CID 7180) in QuantityDefinitionSequence.

No DerivationCodeSequence is written: CID 7203 (Image Derivation) has no code for synthesis by a generative model
or for a relaxation-time fit, and a wrong code is worse than none; DerivationDescription says it in words.

A volume without DICOM source (read from NIfTI / NRRD) gets a new study: new StudyInstanceUID (or the one given, so
that several series of one run share their new study), today's date, empty patient attributes unless given
(`new_study`), and DerivationDescription says so.

The MR Image module's acquisition attributes (C.8.3.1) describe how the images were acquired: a synthetic series
was not, so ScanningSequence is "RM" (research mode) and SequenceVariant "NONE", with the Type 2 timing attributes
empty; a derived series keeps its source's (a fit is of images acquired that way).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import RE_VALID_UID, generate_uid

from ..errors import InputError
from ..volume import Volume
from .dicom import Frame, read_frames, tag_name
from .dicom_export import check_new_folder, storage, write_mr_images
from .dicom_files import find_images, is_dicom_file, library_messages

__all__ = ["PATIENT_STUDY_KEYWORDS", "SYNTHETIC", "DerivedSeries", "is_synthetic", "write_derived_series"]

SYNTHETIC = "SYNTHETIC"  # ImageType value and SeriesDescription prefix of a synthetic series
DERIVED = "DERIVED"  # SeriesDescription prefix of a derived, not synthetic, series
MANUFACTURER = "CMRSynthesis"
# Kept from the source study: Patient (PS3.3 C.7.1.1), General Study (C.7.2.1) and Patient Study (C.7.2.2).
PATIENT_STUDY_KEYWORDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                          "PatientAge", "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime",
                          "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription")
_TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
           "AccessionNumber", "ReferringPhysicianName")  # present even when empty
_SERIES_KEPT = ("PatientPosition", "BodyPartExamined")  # General Series (C.7.3.1), describing the patient
# MR Image module (C.8.3.1): how the source images were acquired (kept for a derived series).
_ACQUISITION = ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "RepetitionTime",
                "EchoTime", "EchoTrainLength")
# metadata "quantity" -> (ImageType Value 3 for MR, C.8.3.1.1.1; quantity code (value, scheme, meaning), CID 7180)
_QUANTITIES = {"t1": ("T1 MAP", ("113063", "DCM", "T1")), "t2": ("T2 MAP", ("113065", "DCM", "T2")),
               "t2_star": ("OTHER", ("113064", "DCM", "T2*")), "t2*": ("OTHER", ("113064", "DCM", "T2*"))}
# metadata "units" -> UCUM code (value, meaning) for MeasurementUnitsCodeSequence
_UCUM = {"ms": ("ms", "millisecond"), "s": ("s", "second"), "%": ("%", "percent"), "1": ("1", "no units"),
         "a.u.": ("[arb'U]", "arbitrary unit"), "mm": ("mm", "millimeter"), "hz": ("Hz", "hertz")}
_TEXT_VRS = ("SH", "LO", "ST", "LT", "PN", "UC", "UT")


@dataclasses.dataclass
class DerivedSeries:
    """What `write_derived_series` wrote.

    paths: the files, in slice-major order. study_instance_uid / series_instance_uid: the series' identifiers.
    source_series: SeriesInstanceUIDs of the DICOM source (empty for a new study). new_study: True when no DICOM
    source was given, so the series opens a study of its own. on_source_geometry: every slice lies in the plane of
    source images (FrameOfReferenceUID and SourceImageSequence kept / written). series_number: its SeriesNumber.
    """

    paths: list[Path]
    study_instance_uid: str
    series_instance_uid: str
    source_series: list[str]
    new_study: bool
    on_source_geometry: bool
    series_number: int


@dataclasses.dataclass
class _Source:
    """The DICOM source images: one data set's header (patient, study, series), each file's SOP class, the frames."""

    header: Dataset
    sop_classes: dict[str, str]
    frames: list[Frame]

    @property
    def series_uids(self) -> list[str]:
        """The SeriesInstanceUIDs of the source images, in their order."""
        return list(dict.fromkeys(frame.header["series_instance_uid"] for frame in self.frames))


def is_synthetic(image_type: Iterable[str]) -> bool:
    """Whether ImageType values mark an image as synthetic (this writer's "SYNTHETIC" from Value 3 on): for readers
    that must not take such images for acquired ones."""
    return SYNTHETIC in [str(value).strip().upper() for value in list(image_type)[2:]]


def write_derived_series(volume: Volume, folder: str | Path, *, method: str, description: str,
                         checkpoint: str | None = None, synthetic: bool = True,
                         source: str | Path | Sequence[str | Path] | None = None, series_number: int | None = None,
                         new_study: Mapping[str, Any] | None = None) -> DerivedSeries:
    """Write `volume` as a new DICOM series that says it is synthetic (or derived) and what it came from.

    volume: (z, y, x), or a cine (t, z, y, x) with metadata "trigger_times_ms" (t times, or t x z) or
    "trigger_times_by_slice_ms" (t x z), in ms, increasing; finite real values. Metadata "units" (e.g. "ms") and
    "quantity" (e.g. "t1") say what the values are; "field_strength_t" is written as MagneticFieldStrength when the
    source does not state it. folder: a new or empty folder, written all or nothing (IM_00001.dcm, ...).
    method: the method's name (e.g. "t1_from_cine"); checkpoint: the checkpoint used (a name or path; None for a
    method without one), recorded as given. description: what the image is ("T1 map from cine"); the
    SeriesDescription is "SYNTHETIC <description>" (or "DERIVED <description>" when not `synthetic`), 64 characters
    at most. source: the DICOM source images (files or a folder); None takes metadata "source_files" (its DICOM
    files; none for a NIfTI input); () means no DICOM source. series_number: default the source's + 1000, else 1001.
    new_study: patient / study attributes (keywords of PATIENT_STUDY_KEYWORDS) for the new study of a volume without
    DICOM source; its StudyInstanceUID (default: a new one) puts another series of the same run in the same study.

    The attributes written and where they come from are listed in the module docstring. Returns a DerivedSeries.
    Raises InputError for non-finite or complex voxels, a 4D volume without usable trigger times, an empty method
    name, a source that is not DICOM images or spans several studies, `new_study` beside a DICOM source, with an
    unknown keyword or an invalid StudyInstanceUID; OutputError when the folder is a file, is not empty or cannot be
    written. Nothing is written on any error; the source files are only read.
    """
    if not isinstance(method, str) or not method.strip():
        raise InputError("the method that made the image must be named (e.g. 't1_from_cine')")
    volume.require_finite("the image to export")
    times = _frame_times(volume)
    unknown = [keyword for keyword in new_study or {} if keyword not in PATIENT_STUDY_KEYWORDS]
    if unknown:
        raise InputError(f"new_study: {', '.join(unknown)} cannot be set; use {', '.join(PATIENT_STUDY_KEYWORDS)}")
    study_uid = (new_study or {}).get("StudyInstanceUID")
    if study_uid is not None and (len(str(study_uid)) > 64 or not re.match(RE_VALID_UID, str(study_uid))):
        raise InputError(f"new_study: StudyInstanceUID {study_uid!r} is not a valid DICOM UID")
    check_new_folder(folder)
    found = _source_paths(volume, source)
    dicom_source = _read_source(found) if found else None
    if dicom_source is not None and new_study:
        raise InputError("new_study attributes are for a volume without DICOM source; this one keeps the study of "
                         f"its source images ({dicom_source.frames[0].label})")
    matched = _match_source(volume, dicom_source.frames) if dicom_source else None
    header = _header(volume, dicom_source, matched is not None, method=method, checkpoint=checkpoint,
                     synthetic=synthetic, description=description, series_number=series_number,
                     new_study=new_study or {})

    def per_image(t: int, z: int) -> dict[str, Any]:
        elements: dict[str, Any] = {}
        if times is not None:
            elements["TriggerTime"] = round(float(times[t, z]), 4)
        if matched is not None:
            elements["SourceImageSequence"] = _source_image_sequence(matched[t][z], dicom_source.sop_classes)
        return elements

    thickness = dicom_source.header.get("SliceThickness") if matched is not None else None
    images = volume.with_array(volume.array, slice_thickness_mm=float(thickness)) if thickness else volume
    paths = write_mr_images(images, folder, header, per_image, always_rescale=True)
    return DerivedSeries(paths, str(header.StudyInstanceUID), str(header.SeriesInstanceUID),
                         dicom_source.series_uids if dicom_source else [], dicom_source is None, matched is not None,
                         int(header.SeriesNumber))


def _frame_times(volume: Volume) -> np.ndarray | None:
    """(t, z) trigger times in ms of a cine's images; None for a 3D volume. InputError unless every slice's times are
    finite and increasing."""
    if volume.array.ndim == 3:
        return None
    count, slices = volume.array.shape[:2]
    by_slice = volume.metadata.get("trigger_times_by_slice_ms")
    given = by_slice if by_slice is not None else volume.metadata.get("trigger_times_ms")
    name = "trigger_times_by_slice_ms" if by_slice is not None else "trigger_times_ms"
    if given is None:
        raise InputError(f"{volume.named('the 4D image')} has no trigger times (metadata trigger_times_ms, ms); a 4D "
                         "image is written as a DICOM cine, whose frames need them")
    try:
        times = np.asarray(given, dtype=float)
    except (TypeError, ValueError) as err:
        raise InputError(f"metadata {name} must hold numbers (ms); got {given!r}") from err
    if times.shape == (count,):
        times = np.repeat(times[:, None], slices, axis=1)
    if times.shape != (count, slices):
        raise InputError(f"metadata {name} has shape {times.shape}; expected {count} times (one per frame) or "
                         f"{count} x {slices} (frames x slices)")
    if not np.all(np.isfinite(times)) or (count > 1 and np.any(np.diff(times, axis=0) <= 0)):
        raise InputError(f"metadata {name} must be finite and increase from frame to frame in every slice; got "
                         f"{times.tolist()}")
    return times


def _source_paths(volume: Volume, source: str | Path | Sequence[str | Path] | None) -> Path | list[Path]:
    """Where the DICOM source images are: a folder, or files (given, or the DICOM files among metadata
    "source_files" when `source` is None); an empty list for none."""
    if source is None:
        return [Path(path) for path in volume.metadata.get("source_files") or [] if is_dicom_file(path)]
    if isinstance(source, (str, Path)):
        return Path(source) if Path(source).is_dir() else [Path(source)]
    return [Path(path) for path in source]


def _read_source(paths_or_dir: Path | list[Path]) -> _Source:
    """The source's images: every DICOM image of a folder (sub-folders included; other files skipped), or the files
    given (InputError for one that is no DICOM image); of one study only (InputError otherwise)."""
    with library_messages():
        scan = find_images(paths_or_dir, recursive=True)
        frames = [frame for path, dataset in scan.images for frame in read_frames(path, dataset)]
    datasets = [dataset for _, dataset in scan.images]
    studies = {str(dataset.get("StudyInstanceUID") or "") for dataset in datasets}
    if "" in studies:
        lacking = next(path for path, dataset in scan.images if not dataset.get("StudyInstanceUID"))
        raise InputError(f"{lacking}: the source image has no {tag_name('StudyInstanceUID')}, so the study the "
                         "series belongs to is unknown")
    if len(studies) > 1:
        examples = {str(dataset.StudyInstanceUID): path.name for path, dataset in scan.images}
        listed = ", ".join(f"{name} in {uid}" for uid, name in list(examples.items())[:3])
        raise InputError(f"the source images belong to {len(studies)} studies ({tag_name('StudyInstanceUID')} "
                         f"differs: {listed}); give the images of one study")
    lacking = [frame.label for frame in frames if not frame.header.get("series_instance_uid")
               or not frame.sop_instance_uid]
    if lacking:
        raise InputError(f"{lacking[0]}: the source image lacks {tag_name('SeriesInstanceUID')} or "
                         f"{tag_name('SOPInstanceUID')}, so it cannot be referenced")
    header = datasets[0].copy()
    for keyword in ("PixelData", "PerFrameFunctionalGroupsSequence"):
        header.pop(keyword, None)
    sop_classes = {str(path): str(dataset.SOPClassUID) for path, dataset in scan.images}
    return _Source(header, sop_classes, frames)


def _match_source(volume: Volume, frames: list[Frame]) -> list[list[list[Frame]]] | None:
    """The source frames of each output image, [t][z], or None when the output is not on the source's geometry.

    A source frame belongs to output slice z when its plane is parallel to the output's and lies within half a slice
    spacing of slice z. Every output slice needs at least one. For a cine whose slices each match as many source
    frames as it has frames, frame t takes the t-th of them in time (TriggerTime, else InstanceNumber); otherwise
    every image of slice z takes all of that slice's source frames."""
    direction = np.reshape(volume.direction, (3, 3))
    normal, origin, spacing = direction[:, 2], np.asarray(volume.origin), volume.spacing[2]
    slices = volume.spatial_shape[0]
    count = volume.array.shape[0] if volume.array.ndim == 4 else 1
    by_slice: list[list[Frame]] = [[] for _ in range(slices)]
    for frame in frames:
        frame_normal = np.cross(frame.orientation[:3], frame.orientation[3:])
        if abs(abs(float(frame_normal @ normal)) - 1.0) > 1e-4:
            continue
        z = round(float((frame.position - origin) @ normal) / spacing)
        if 0 <= z < slices:
            by_slice[z].append(frame)
    if not all(by_slice):
        return None
    timed = all(frame.trigger_time is not None for frame in frames)
    matched = []
    for t in range(count):
        row = []
        for members in by_slice:
            if count > 1 and len(members) == count:
                ordered = sorted(members, key=lambda frame: (frame.trigger_time if timed else 0.0,
                                                             frame.instance_number or 0, frame.label))
                row.append([ordered[t]])
            else:
                row.append(members)
        matched.append(row)
    return matched


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    """A Code Sequence Macro item (PS3.3 Table 8.8-1)."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _source_image_sequence(frames: list[Frame], sop_classes: dict[str, str]) -> DicomSequence:
    """SourceImageSequence items (General Reference module, PS3.3 C.12.4) for the source frames of one image."""
    items = []
    for frame in frames:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_classes[frame.file]
        item.ReferencedSOPInstanceUID = frame.sop_instance_uid
        if frame.frame_number is not None:
            item.ReferencedFrameNumber = frame.frame_number
        item.PurposeOfReferenceCodeSequence = [_code("121322", "DCM", "Source image for image processing operation")]
        items.append(item)
    return DicomSequence(items)


def _referenced_series(source: _Source) -> DicomSequence:
    """ReferencedSeriesSequence (Common Instance Reference module, PS3.3 C.12.2): every source instance by series."""
    instances: dict[str, dict[str, str]] = {}
    for frame in source.frames:
        instances.setdefault(frame.header["series_instance_uid"], {})[frame.sop_instance_uid] = (
            source.sop_classes[frame.file])
    items = []
    for series_uid, members in instances.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        references = []
        for sop_instance, sop_class in members.items():
            reference = Dataset()
            reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = sop_class, sop_instance
            references.append(reference)
        item.ReferencedInstanceSequence = references
        items.append(item)
    return DicomSequence(items)


def _software_version() -> str:
    try:
        return importlib.metadata.version("cmrsynthesis")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _one_line(text: str, limit: int) -> str:
    """Text for an LO / SH value: one line, no backslash (the value separator), at most `limit` characters."""
    return " ".join(str(text).replace("\\", "/").split())[:limit]


def _header(volume: Volume, source: _Source | None, on_geometry: bool, *, method: str, checkpoint: str | None,
            synthetic: bool, description: str, series_number: int | None, new_study: Mapping[str, Any]) -> Dataset:
    """The elements every file of the series shares (see the module docstring)."""
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    header = Dataset()
    _patient_and_study(header, source, new_study, date, time)
    # General Series (C.7.3.1)
    header.Modality = "MR"
    header.SeriesInstanceUID = generate_uid()
    number = source.header.get("SeriesNumber") if source is not None else None
    header.SeriesNumber = series_number if series_number is not None else (int(number) + 1000 if number else 1001)
    prefix = SYNTHETIC if synthetic else DERIVED
    text = _one_line(description, 64)
    if text.upper().startswith(prefix):  # "synthetic LGE" -> "SYNTHETIC LGE", not "SYNTHETIC synthetic LGE"
        text = text[len(prefix):].strip()
    header.SeriesDescription = _one_line(f"{prefix} {text}", 64)
    header.SeriesDate, header.SeriesTime = date, time
    header.PatientPosition = ""
    for keyword in _SERIES_KEPT:
        if source is not None and source.header.get(keyword):
            setattr(header, keyword, source.header[keyword].value)
    # Frame of Reference (C.7.4.1)
    kept_frame = source.header.get("FrameOfReferenceUID") if source is not None and on_geometry else None
    header.FrameOfReferenceUID = str(kept_frame) if kept_frame else generate_uid()
    header.PositionReferenceIndicator = (source.header.get("PositionReferenceIndicator") or "") if kept_frame else ""
    # General Equipment (C.7.5.1): the equipment that made this series
    version = _software_version()
    header.Manufacturer = header.ManufacturerModelName = MANUFACTURER
    header.SoftwareVersions = version
    # General Image (C.7.6.1) and General Reference (C.12.4)
    quantity = str(volume.metadata.get("quantity") or "").strip().lower()
    kind, quantity_code = _QUANTITIES.get(quantity, ("OTHER", None))
    header.ImageType = ["DERIVED", "SECONDARY", kind] + ([SYNTHETIC] if synthetic else [])
    header.ContentDate, header.ContentTime = date, time
    header.BurnedInAnnotation = "NO"
    units = str(volume.metadata.get("units") or "").strip()
    provenance = _provenance(volume, source, method, checkpoint, synthetic, version, units)
    header.DerivationDescription = provenance[:1024]
    header.ImageComments = provenance[:10240]
    if source is not None:
        header.ReferencedSeriesSequence = _referenced_series(source)  # Common Instance Reference (C.12.2)
    # MR Image (C.8.3.1)
    _acquisition(header, source, synthetic, volume)
    # Values: rescale (RescaleType holds the units) and the real world value mapping
    frames = volume.array if volume.array.ndim == 4 else volume.array[None]
    header.RescaleType = units if units and len(units) <= 64 and "\\" not in units and units.isprintable() else "US"
    mapping = _real_world_value_mapping(frames, units, quantity, quantity_code)
    if mapping is not None:
        header.RealWorldValueMappingSequence = [mapping]
    # SOP Common (C.12.1)
    header.InstanceCreationDate, header.InstanceCreationTime = date, time
    equipment = Dataset()
    purpose = ("109100", "DCM", "Synthesizing Equipment") if synthetic else ("109102", "DCM", "Processing Equipment")
    equipment.PurposeOfReferenceCodeSequence = [_code(*purpose)]
    equipment.Manufacturer, equipment.ManufacturerModelName = MANUFACTURER, _one_line(method, 64)
    equipment.SoftwareVersions = version
    equipment.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    equipment.ContributionDescription = f"method {method}; checkpoint {checkpoint or 'none'}"[:1024]
    header.ContributingEquipmentSequence = [equipment]
    if not _ascii(header):
        header.SpecificCharacterSet = "ISO_IR 192"  # UTF-8
    return header


def _patient_and_study(header: Dataset, source: _Source | None, new_study: Mapping[str, Any], date: str,
                       time: str) -> None:
    """Patient (C.7.1.1), General Study (C.7.2.1) and Patient Study (C.7.2.2) attributes: the source's, or a new
    study's (a new StudyInstanceUID unless `new_study` gives one, today, `new_study`'s attributes). Person names are
    copied as text, so they are written in this series' character set."""
    for keyword in _TYPE_2:
        setattr(header, keyword, "")
    if source is None:
        header.StudyInstanceUID = generate_uid()
        header.StudyDate, header.StudyTime = date, time
        header.StudyDescription = "CMRSynthesis: new study (image without DICOM source)"
        for keyword, value in new_study.items():
            setattr(header, keyword, value)
        return
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword not in source.header or source.header[keyword].value in (None, ""):
            continue
        element = source.header[keyword]
        setattr(header, keyword, str(element.value) if element.VR == "PN" else element.value)


def _acquisition(header: Dataset, source: _Source | None, synthetic: bool, volume: Volume) -> None:
    """The MR Image module's acquisition attributes (C.8.3.1; see the module docstring), MagneticFieldStrength and,
    for a cine, CardiacNumberOfImages and NominalInterval."""
    kept = source is not None and not synthetic and bool(source.header.get("ScanningSequence"))
    for keyword in _ACQUISITION:
        value = source.header.get(keyword) if kept else None
        setattr(header, keyword, value if value is not None else "")
    if not kept:
        header.ScanningSequence, header.SequenceVariant = "RM", "NONE"
    if "IR" in header["ScanningSequence"].value:  # a str, or a MultiValue of str
        header.InversionTime = ""  # Type 2C: required for IR sequences; a map has no single inversion time
    field = source.header.get("MagneticFieldStrength") if source is not None else None
    if field not in (None, ""):
        header.MagneticFieldStrength = field
    elif volume.metadata.get("field_strength_t") is not None:
        header.MagneticFieldStrength = round(float(volume.metadata["field_strength_t"]), 4)
    if volume.array.ndim == 4:
        header.CardiacNumberOfImages = volume.array.shape[0]
        rr = volume.metadata.get("rr_interval_ms")
        if rr is not None and np.isfinite(float(rr)) and float(rr) > 0:
            header.NominalInterval = round(float(rr))


def _provenance(volume: Volume, source: _Source | None, method: str, checkpoint: str | None, synthetic: bool,
                version: str, units: str) -> str:
    """The derivation in words, for DerivationDescription and ImageComments."""
    what = ("SYNTHETIC image made by a generative model: not acquired by a scanner" if synthetic else
            "DERIVED image computed from acquired images")
    if source is not None:
        described = source.header.get("SeriesDescription")
        origin = (f"from {len(source.sop_classes)} source file(s) of series {', '.join(source.series_uids)}"
                  + (f" ('{described}')" if described else "") + " (ReferencedSeriesSequence)")
    else:
        files = volume.metadata.get("source_files")
        read_from = f" ({volume.describe_source()})" if files else ""
        origin = (f"from an input without DICOM source{read_from}: a new study, not linked to the patient's "
                  "studies")
    values = f"; values in {units}" if units else ""
    return (f"{what}; made by CMRSynthesis {version}, method {method}, checkpoint {checkpoint or 'none'}, {origin}"
            f"{values}")


def _real_world_value_mapping(frames: np.ndarray, units: str, quantity: str,
                              quantity_code: tuple[str, str, str] | None) -> Dataset | None:
    """A Real World Value Mapping item (PS3.3 C.7.6.16.2.11: stored value -> value in `units`), or None when the
    units have no UCUM code here (labels, free text)."""
    ucum = _UCUM.get(units.lower())
    if ucum is None:
        return None
    dtype, slope, intercept = storage(frames)
    item = Dataset()
    info = np.iinfo(dtype)
    vr = "SS" if dtype == np.int16 else "US"
    item.add_new("RealWorldValueFirstValueMapped", vr, int(info.min))
    item.add_new("RealWorldValueLastValueMapped", vr, int(info.max))
    item.RealWorldValueIntercept = float(intercept) if intercept is not None else 0.0
    item.RealWorldValueSlope = float(slope) if slope is not None else 1.0
    label = (quantity_code[2] if quantity_code else quantity or "value")
    item.LUTExplanation = _one_line(f"{label} ({units})", 64)
    item.LUTLabel = _one_line(label, 16)
    item.MeasurementUnitsCodeSequence = [_code(ucum[0], "UCUM", ucum[1])]
    if quantity_code is not None:
        definition = Dataset()
        definition.ValueType = "CODE"
        definition.ConceptNameCodeSequence = [_code("246205007", "SCT", "Quantity")]
        definition.ConceptCodeSequence = [_code(*quantity_code)]
        item.QuantityDefinitionSequence = [definition]
    return item


def _ascii(dataset: Dataset) -> bool:
    """Whether every text value (sequences included) is plain ASCII, so the default character set holds it."""
    return all(str(element.value).isascii() for element in dataset.iterall() if element.VR in _TEXT_VRS)

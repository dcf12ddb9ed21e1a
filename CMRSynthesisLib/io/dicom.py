"""DICOM images (pydicom) -> Volume: single-frame series and enhanced multi-frame files.

Every image, a single-frame file or one frame of a multi-frame file, becomes a `Frame` with its own geometry,
rescale, times, complex component and acquisition clock. `read_image_frames` reads what a user points at
(`dicom_files.find_images` recognises the images by content), drops exact duplicates and keeps the magnitude
images; `assemble_frames` checks that the frames form one series on one grid, orders them along the slice normal
(and in time where several share a position) and stacks them as (z, y, x) or (t, z, y, x).
Geometry is LPS, as ITK reads DICOM: origin = first slice's ImagePositionPatient, direction columns = row
direction, column direction, slice normal (row x column).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.tag import Tag
from pydicom.valuerep import DT, TM

from ..errors import InputError
from ..volume import Volume
from .dicom_files import find_images, is_dicom_file, library_messages

__all__ = ["Frame", "assemble_frames", "frame_names", "group_by_position", "is_dicom_file", "read_dicom_series",
           "read_image_frames", "tag_name"]

POSITION_TOLERANCE = 0.05  # largest allowed slice misplacement, as a fraction of the smaller pixel spacing
# Philips keeps each MOLLI image's inversion time only in a private element: (2005,xx72) of this creator, in ms.
PHILIPS_TI_CREATOR, PHILIPS_TI_ELEMENT = "Philips MR Imaging DD 006", 0x72
PHILIPS_TI_SOURCE = "Philips private (2005,1572)"
# GE keeps the complex component of an image in a private element: (0043,xx2F) of this creator, 0-3 as below.
GE_TYPE_CREATOR, GE_TYPE_ELEMENT = "GEMS_PARM_01", 0x2F
GE_COMPONENTS = {0: "magnitude", 1: "phase", 2: "real", 3: "imaginary"}
# ImageType values (from the third on) that name a complex component, across vendors: Siemens M / P / R / I,
# Philips M_FFE, P_SE, R_IR, ... (component letter + "_" + sequence), and the words themselves.
COMPONENT_WORDS = {"M": "magnitude", "MAG": "magnitude", "MAGNITUDE": "magnitude", "P": "phase", "PHASE": "phase",
                   "PHA": "phase", "R": "real", "REAL": "real", "I": "imaginary", "IMAGINARY": "imaginary",
                   "IMAG": "imaginary"}
PLAUSIBLE_TI_MS = (0.0, 10000.0)  # an inversion time outside this open range is not one (0: not an IR image)


@dataclasses.dataclass
class Frame:
    """One 2D image with what is needed to place it. Lengths in mm, times in ms, vectors in LPS."""

    file: str
    label: str  # the file, plus the frame number for a multi-frame file (for messages)
    header: dict[str, Any]  # series-level metadata: modality, series_description, series_instance_uid
    image_type: tuple[str, ...]  # ImageType values, upper case (e.g. ORIGINAL, PRIMARY, M, ...)
    instance_number: int | None  # InstanceNumber (frames of one file share it)
    units: str | None  # RescaleType, unless unspecified ("US")
    pixels: np.ndarray  # (rows, columns) stored values
    position: np.ndarray  # (3,) ImagePositionPatient: centre of the first pixel
    orientation: np.ndarray  # (6,) ImageOrientationPatient: row direction, then column direction
    pixel_spacing: np.ndarray  # (2,) PixelSpacing: (between rows, between columns)
    slice_spacing: float | None  # SpacingBetweenSlices or SliceThickness, used for a single slice only
    slope: float
    intercept: float
    inversion_time: float | None  # the first plausible of InversionTimes, InversionTime, Philips private TI
    inversion_source: str | None  # the element it came from, for messages and provenance
    trigger_time: float | None
    component: str | None = None  # "magnitude", "phase", "real", "imaginary", "mixed"; None when not stated
    sop_instance_uid: str | None = None
    frame_number: int | None = None  # 1-based position in a multi-frame file; None for a single-frame file
    acquisition_datetime: float | None = None  # s since 1970 (frame / acquisition date and time)
    acquisition_time_of_day: float | None = None  # s since midnight (AcquisitionTime alone)
    time_notes: tuple[str, ...] = ()  # inversion-time elements that held implausible values and were passed over
    # Where the image belongs and how the scanner timed it (cine); None where absent or not numeric.
    study_instance_uid: str | None = None
    series_number: int | None = None
    acquisition_number: int | None = None
    cardiac_images: int | None = None  # CardiacNumberOfImages (0018,1090): the phases each slice should hold
    nominal_interval: float | None = None  # ms: RRIntervalTimeNominal (0020,9251), else NominalInterval (0018,1062)
    content_time_of_day: float | None = None  # s since midnight (ContentTime)
    slice_thickness: float | None = None  # SliceThickness (mm), None where absent or not positive


def slice_thickness_metadata(frames: Iterable[Frame]) -> dict[str, float]:
    """{"slice_thickness_mm": SliceThickness} when every frame states the same one (within 0.01 mm), else {}:
    the thickness a slice images, which the slice spacing overstates when there are gaps."""
    values = {frame.slice_thickness for frame in frames}
    if None in values or not values or max(values) - min(values) > 0.01:
        return {}
    return {"slice_thickness_mm": float(min(values))}


def read_dicom_series(paths_or_dir: str | Path | Iterable[str | Path]) -> Volume:
    """Read one DICOM series into a Volume.

    paths_or_dir: a folder (its files, sub-folders included), one file, or a list of files. In a folder, files are
    recognised by content: non-DICOM files, non-image objects (reports, presentation states, ...), colour images
    and screen captures are skipped; exact duplicates are dropped; phase / real / imaginary images beside
    magnitude images are left out; all listed in metadata "skipped". Images are ordered by position along the slice
    normal; images sharing a position must differ in InversionTime or TriggerTime and give a (t, z, y, x) array
    ordered by that time. A multi-frame (enhanced) file gives one image per frame, placed by its functional groups.
    Rescale slope/intercept are applied (float32 result) unless all are 1/0 (stored dtype kept).
    Metadata: modality, series_description, series_instance_uid, source_files, skipped, slice_positions_mm, units
    (RescaleType, when given), inversion_times_ms (see Frame.inversion_time), trigger_times_ms and
    instance_numbers: per slice [z] for 3D or [t][z] for 4D, an entry None where the image lacks the tag, and
    None when no image has it.
    Raises InputError naming the file and the reason.
    """
    frames, skipped = read_image_frames(paths_or_dir, recursive=True)
    frames, components = keep_magnitude(frames)
    volume = assemble_frames(frames)
    volume.metadata["skipped"] = skipped + components
    return volume


def read_image_frames(paths_or_dir: str | Path | Iterable[str | Path], *, recursive: bool = False
                      ) -> tuple[list[Frame], list[str]]:
    """The image frames of the DICOM files at `paths_or_dir` (sub-folders too with `recursive`), exact duplicates
    dropped, and one line per group of files or images left out (see read_dicom_series)."""
    with library_messages():  # pydicom's remarks on odd values never reach the console; errors say what matters
        scan = find_images(paths_or_dir, recursive=recursive)
        frames = [frame for path, dataset in scan.images for frame in read_frames(path, dataset)]
    frames, duplicates = drop_duplicates(frames)
    return frames, scan.skipped + duplicates


def tag_name(keyword: str) -> str:
    """'PixelSpacing (0028,0030)'."""
    return f"{keyword} {Tag(tag_for_keyword(keyword))}"


def _lookup(dataset: pydicom.Dataset, index: int, keyword: str, sequence: str | None = None) -> Any:
    """A frame's value of `keyword`: inside functional group `sequence` (per-frame, then shared) when given,
    else at the top level. None when absent or empty."""
    if sequence:
        for name, item in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
            groups = dataset.get(name)
            nested = groups[item].get(sequence) if groups is not None and item < len(groups) else None
            if nested and nested[0].get(keyword) not in (None, ""):
                return nested[0].get(keyword)
    value = dataset.get(keyword)
    return None if value in (None, "") else value


def read_frames(path: Path, dataset: pydicom.Dataset) -> list[Frame]:
    """All images of one DICOM file (one per frame, pixels decoded) from its data set, as `find_images` read it.

    InputError naming the file when an element the images need is missing or the pixel data cannot be fully
    decoded (any decoder complaint counts: never a partly decoded image)."""
    for keyword in ("Rows", "Columns", "PixelData"):
        if keyword not in dataset:
            raise InputError(f"{path}: {tag_name(keyword)} is missing (not an image, or the file is truncated)")
    try:
        count = int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: {tag_name('NumberOfFrames')} is not a number: {dataset.NumberOfFrames!r}") from err
    if count < 1:
        raise InputError(f"{path}: {tag_name('NumberOfFrames')} is {count}")
    if count > 1 and "PerFrameFunctionalGroupsSequence" not in dataset:
        raise InputError(f"{path}: multi-frame file without {tag_name('PerFrameFunctionalGroupsSequence')}; "
                         "the frames cannot be placed")
    pixels = _decode(dataset, path, count)
    header = {"modality": dataset.get("Modality"), "series_description": dataset.get("SeriesDescription"),
              "series_instance_uid": dataset.get("SeriesInstanceUID"),
              "frame_of_reference_uid": dataset.get("FrameOfReferenceUID"),
              "magnetic_field_strength": dataset.get("MagneticFieldStrength")}
    header = {key: str(value) if value is not None else None for key, value in header.items()}
    rescale_type = _lookup(dataset, 0, "RescaleType", "PixelValueTransformationSequence")
    units = str(rescale_type) if rescale_type not in (None, "US") else None
    return [_frame(dataset, path, index, count, pixels[index], header, units) for index in range(count)]


def _decode(dataset: pydicom.Dataset, path: Path, count: int) -> np.ndarray:
    """(frames, rows, columns) stored pixel values; InputError when the decoder fails or complains."""
    with library_messages() as messages:
        try:
            pixels = dataset.pixel_array.reshape(count, int(dataset.Rows), int(dataset.Columns))
        except Exception as err:  # decoders raise many exception types on corrupt or truncated pixel data
            raise InputError(f"{path}: the pixel data cannot be decoded ({err})") from err
    if messages:
        raise InputError(f"{path}: the pixel data were not fully decoded ({messages[0]})")
    return pixels


def _philips_inversion_time(dataset: pydicom.Dataset) -> Any:
    """The Philips private per-image inversion time element's value, None when the file lacks it. In an implicit-VR
    file (as PACS re-encode them) the element has lost its VR and comes as raw bytes: they are the element's FL
    (little-endian float32) values."""
    try:
        value = dataset.private_block(0x2005, PHILIPS_TI_CREATOR)[PHILIPS_TI_ELEMENT].value
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if isinstance(value, bytes):
        return np.frombuffer(value, dtype="<f4").tolist() if value and len(value) % 4 == 0 else None
    return value


def _numbers(value: Any) -> np.ndarray | None:
    """A tag value as a float vector; None when absent or not numeric."""
    if value is None or value == "":
        return None
    try:
        return np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError):
        return None


def _inversion_time(dataset: pydicom.Dataset, index: int) -> tuple[float | None, str | None, tuple[str, ...]]:
    """The frame's inversion time (ms) from the first source that holds one plausible value: InversionTimes
    (0018,9079), InversionTime (0018,0082), the Philips private (2005,1572). Returns the time, its source and a note
    for each source passed over for holding implausible values (not finite, <= 0 (quietly), >= 10 s, several)."""
    sources = ((tag_name("InversionTimes"), _lookup(dataset, index, "InversionTimes", "MRModifierSequence")),
               (tag_name("InversionTime"), _lookup(dataset, index, "InversionTime")),
               (PHILIPS_TI_SOURCE, _philips_inversion_time(dataset)))
    notes = []
    for source, raw in sources:
        values = _numbers(raw)
        if values is None or values.size == 0:
            continue
        low, high = PLAUSIBLE_TI_MS
        plausible = values[np.isfinite(values) & (values > low) & (values < high)]
        if plausible.size == values.size and np.unique(plausible).size == 1:
            return float(plausible[0]), source, tuple(notes)
        if np.any(values != 0):
            notes.append(f"{source} holds {'/'.join(f'{value:g}' for value in values)}: not one plausible inversion "
                         "time (finite, above 0 and below 10 s), passed over")
    return None, None, tuple(notes)


def _component(dataset: pydicom.Dataset, index: int) -> str | None:
    """The complex component an image holds, from (in this order) the enhanced-MR ComplexImageComponent
    (per frame, then top level), GE's private image type (0043,xx2F), then the ImageType values from the third
    on (Siemens M / P / R / I, Philips M_FFE / P_SE / ..., or the words); None when none says."""
    stated = _lookup(dataset, index, "ComplexImageComponent", "MRImageFrameTypeSequence")
    if stated:
        return str(stated).lower()
    try:
        ge_type = int(dataset.private_block(0x0043, GE_TYPE_CREATOR)[GE_TYPE_ELEMENT].value)
        return GE_COMPONENTS.get(ge_type)
    except (KeyError, TypeError, ValueError, IndexError):
        pass
    frame_type = _lookup(dataset, index, "FrameType", "MRImageFrameTypeSequence")
    values = [str(value).upper().strip() for value in (frame_type or dataset.get("ImageType") or ())][2:]
    for value in values:
        word = value.split("_")[0] if "_" in value else value
        if word in COMPONENT_WORDS:
            return COMPONENT_WORDS[word]
    return None


def _acquisition_clock(dataset: pydicom.Dataset, index: int) -> tuple[float | None, float | None]:
    """(seconds since 1970, seconds since midnight) of the frame's acquisition: FrameAcquisitionDateTime
    (FrameContentSequence), else AcquisitionDateTime, else AcquisitionDate + AcquisitionTime; AcquisitionTime
    alone gives the time of day only. None where the elements are absent or unreadable."""
    text = _lookup(dataset, index, "FrameAcquisitionDateTime", "FrameContentSequence")
    text = text or dataset.get("AcquisitionDateTime")
    if not text and dataset.get("AcquisitionDate") and dataset.get("AcquisitionTime"):
        text = f"{dataset.AcquisitionDate}{dataset.AcquisitionTime}"
    try:
        if text:
            moment = DT(str(text).strip())
            midnight = datetime.datetime.combine(moment.date(), datetime.time(), moment.tzinfo)
            epoch = datetime.datetime(1970, 1, 1, tzinfo=moment.tzinfo)
            return (moment - epoch).total_seconds(), (moment - midnight).total_seconds()
        if dataset.get("AcquisitionTime"):
            time = TM(str(dataset.AcquisitionTime).strip())
            return None, time.hour * 3600 + time.minute * 60 + time.second + time.microsecond / 1e6
    except (ValueError, TypeError, AttributeError):
        pass
    return None, None


def _frame(dataset: pydicom.Dataset, path: Path, index: int, count: int, pixels: np.ndarray,
           header: dict[str, Any], units: str | None) -> Frame:
    """Frame `index` of `dataset`, its attributes read from the functional groups or the top level."""
    label = f"{path} (frame {index + 1})" if count > 1 else str(path)

    def values(keyword: str, sequence: str | None = None) -> np.ndarray | None:
        value = _lookup(dataset, index, keyword, sequence)
        try:
            return None if value is None else np.asarray(value, dtype=float).ravel()
        except (TypeError, ValueError) as err:
            raise InputError(f"{label}: {tag_name(keyword)} is not numeric: {value!r}") from err

    def numbers(keyword: str, sequence: str, size: int) -> np.ndarray:
        found = values(keyword, sequence)
        if found is None:
            raise InputError(f"{label}: {tag_name(keyword)} is missing")
        if found.size != size or not np.all(np.isfinite(found)):
            raise InputError(f"{label}: {tag_name(keyword)} must hold {size} finite numbers; got {found.tolist()}")
        return found

    def number(keyword: str, sequence: str | None = None) -> float | None:
        found = values(keyword, sequence)
        return None if found is None or found.size == 0 or not np.isfinite(found[0]) else float(found[0])

    orientation = numbers("ImageOrientationPatient", "PlaneOrientationSequence", 6)
    row, column = orientation[:3], orientation[3:]
    if max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(column) - 1), abs(row @ column)) > 1e-3:
        raise InputError(f"{label}: {tag_name('ImageOrientationPatient')} is not two orthogonal unit vectors: "
                         f"{orientation}")
    pixel_spacing = numbers("PixelSpacing", "PixelMeasuresSequence", 2)
    if np.any(pixel_spacing <= 0):
        raise InputError(f"{label}: {tag_name('PixelSpacing')} must be positive; got {pixel_spacing.tolist()}")
    spacings = [number(keyword, "PixelMeasuresSequence") for keyword in ("SpacingBetweenSlices", "SliceThickness")]
    slope = number("RescaleSlope", "PixelValueTransformationSequence")
    intercept = number("RescaleIntercept", "PixelValueTransformationSequence")
    inversion, source, notes = _inversion_time(dataset, index)
    trigger = number("NominalCardiacTriggerDelayTime", "CardiacSynchronizationSequence")  # enhanced MR
    instance = number("InstanceNumber")
    moment, time_of_day = _acquisition_clock(dataset, index)
    return Frame(
        file=str(path), label=label, header=header, units=units, pixels=pixels,
        image_type=tuple(str(value).upper() for value in (dataset.get("ImageType") or ())),
        instance_number=None if instance is None else int(instance),
        position=numbers("ImagePositionPatient", "PlanePositionSequence", 3), orientation=orientation,
        pixel_spacing=pixel_spacing,
        slice_spacing=next((value for value in spacings if value and value > 0), None),
        slice_thickness=spacings[1] if spacings[1] and spacings[1] > 0 else None,
        slope=1.0 if slope is None else slope, intercept=0.0 if intercept is None else intercept,
        inversion_time=inversion, inversion_source=source,
        trigger_time=number("TriggerTime") if trigger is None else trigger,
        component=_component(dataset, index), sop_instance_uid=str(dataset.get("SOPInstanceUID") or "") or None,
        frame_number=index + 1 if count > 1 else None, acquisition_datetime=moment,
        acquisition_time_of_day=time_of_day, time_notes=notes,
        study_instance_uid=str(dataset.get("StudyInstanceUID") or "") or None,
        series_number=_optional_integer(dataset.get("SeriesNumber")),
        acquisition_number=_optional_integer(dataset.get("AcquisitionNumber")),
        cardiac_images=_optional_integer(dataset.get("CardiacNumberOfImages")),
        nominal_interval=_positive(_lookup(dataset, index, "RRIntervalTimeNominal", "CardiacSynchronizationSequence"))
        or _positive(dataset.get("NominalInterval")),
        content_time_of_day=_time_of_day(dataset.get("ContentTime")),
    )


def _optional_integer(value: Any) -> int | None:
    """An integer element's value; None when absent, empty or not a finite number (never an error: these elements
    only help to tell acquisitions apart)."""
    values = _numbers(value)
    return int(values[0]) if values is not None and values.size and np.isfinite(values[0]) else None


def _positive(value: Any) -> float | None:
    """A positive finite number from an element's value; None otherwise."""
    values = _numbers(value)
    return float(values[0]) if values is not None and values.size and np.isfinite(values[0]) and values[0] > 0 else None


def _time_of_day(value: Any) -> float | None:
    """Seconds since midnight of a TM value; None when absent or unreadable."""
    try:
        time = TM(str(value).strip()) if value else None
    except (ValueError, TypeError):
        return None
    return None if time is None else time.hour * 3600 + time.minute * 60 + time.second + time.microsecond / 1e6


def drop_duplicates(frames: list[Frame]) -> tuple[list[Frame], list[str]]:
    """Frames without exact duplicates (same SOPInstanceUID and frame, same pixels and position: the same image
    stored twice), and a line naming the files dropped. InputError for two different images under one UID."""
    kept: dict[tuple[str, int | None], Frame] = {}
    unique, dropped = [], []
    for frame in frames:
        key = (frame.sop_instance_uid, frame.frame_number)
        first = kept.get(key) if frame.sop_instance_uid else None
        if first is None:
            kept[key] = frame
            unique.append(frame)
            continue
        if not (np.array_equal(first.pixels, frame.pixels) and np.allclose(first.position, frame.position)):
            raise InputError(f"{first.label} and {frame.label} carry the same {tag_name('SOPInstanceUID')} "
                             f"{frame.sop_instance_uid} but hold different images; remove the wrong copy")
        dropped.append(f"{frame.label} (= {first.label})")
    if not dropped:
        return unique, []
    more = " and more" if len(dropped) > 3 else ""
    line = f"{len(dropped)} duplicate image(s) (same SOPInstanceUID and pixels) dropped: {', '.join(dropped[:3])}{more}"
    return unique, [line]


def keep_magnitude(frames: list[Frame]) -> tuple[list[Frame], list[str]]:
    """The magnitude images (and images whose component is not stated), with one line per other component left
    out. Without any magnitude image, images of one other component are all kept, with a line saying so (Siemens
    marks its parameter maps "P"); InputError for several other components, naming them."""
    kept = [frame for frame in frames if frame.component in (None, "magnitude")]
    others: dict[str, list[Frame]] = {}
    for frame in frames:
        if frame.component not in (None, "magnitude"):
            others.setdefault(frame.component, []).append(frame)
    if not kept and len(others) == 1:
        return frames, [f"no magnitude images: reading the {len(frames)} {next(iter(others))} image(s)"]
    if not kept:
        found = ", ".join(f"{len(members)} {name}" for name, members in others.items())
        raise InputError(f"no magnitude images among {frame_names(frames)} (found {found} images); give one "
                         "series of one image type")
    return kept, [f"{len(members)} {name} image(s) beside the magnitude images: {frame_names(members)}"
                  for name, members in others.items()]


def frame_names(frames: Iterable[Frame], limit: int = 3) -> str:
    """Up to `limit` distinct frame labels for a message."""
    labels = list(dict.fromkeys(frame.label for frame in frames))
    more = f" and {len(labels) - limit} more" if len(labels) > limit else ""
    return ", ".join(labels[:limit]) + more


def _check_consistent(frames: list[Frame]) -> None:
    """All frames share one series, image size, pixel spacing and orientation, or InputError."""
    first = frames[0]
    checks: tuple[tuple[str, Callable[[Frame], Any], bool], ...] = (
        ("SeriesInstanceUID", lambda frame: frame.header["series_instance_uid"], False),
        ("Rows x Columns", lambda frame: frame.pixels.shape, False),
        ("PixelSpacing", lambda frame: frame.pixel_spacing, True),
        ("ImageOrientationPatient", lambda frame: frame.orientation, True),
    )
    for name, value, numeric in checks:
        same = (lambda a, b: np.allclose(a, b, atol=1e-4)) if numeric else (lambda a, b: a == b)
        differ = [frame for frame in frames if not same(value(frame), value(first))]
        if differ:
            raise InputError(f"the input mixes images that differ in {name}: {first.label} has {value(first)}, "
                             f"{differ[0].label} has {value(differ[0])} ({len(differ)} of {len(frames)} images "
                             f"differ: {frame_names(differ)}); give one series with one geometry")


def _order_in_time(stacks: list[list[Frame]]) -> list[list[Frame]]:
    """Each position's frames sorted by the time (inversion time, else TriggerTime) that tells them apart.

    InputError when neither does; where every image has a time but two at one position share it, the message names
    the element, the value and the clashing files."""
    if len(stacks[0]) == 1:
        return stacks
    clash = None
    for attribute, default_source in (("inversion_time", tag_name("InversionTime")),
                                      ("trigger_time", tag_name("TriggerTime"))):
        times = [[getattr(frame, attribute) for frame in stack] for stack in stacks]
        if all(None not in values and len(set(values)) == len(values) for values in times):
            return [sorted(stack, key=lambda frame: getattr(frame, attribute)) for stack in stacks]
        if clash is None and all(None not in values for values in times):
            stack = next(stack for stack, values in zip(stacks, times) if len(set(values)) < len(values))
            seen: dict[float, Frame] = {}
            for frame in stack:
                value = getattr(frame, attribute)
                if value in seen:
                    source = (frame.inversion_source if attribute == "inversion_time" else None) or default_source
                    clash = (f"{seen[value].label} and {frame.label} lie at one slice position with the same {source} "
                             f"{value:g} ms; remove the duplicate or give the series whose images differ in time")
                    break
                seen[value] = frame
    if clash:
        raise InputError(clash)
    raise InputError(f"{len(stacks[0])} images share each slice position ({frame_names(stacks[0])}) but do not differ in "
                     f"{tag_name('InversionTime')} or {tag_name('TriggerTime')}, so they cannot be ordered in time")


def group_by_position(frames: list[Frame]) -> list[list[Frame]]:
    """Frames grouped by slice position, positions in increasing order along the first frame's slice normal
    (positions closer than POSITION_TOLERANCE of the finest pixel spacing count as one); each group in input order."""
    first = frames[0]
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    tolerance = POSITION_TOLERANCE * min(float(frame.pixel_spacing.min()) for frame in frames)
    stacks: list[list[Frame]] = []
    previous = None
    for frame in sorted(frames, key=lambda frame: float(frame.position @ normal)):
        distance = float(frame.position @ normal)
        if previous is None or distance - previous > tolerance:
            stacks.append([])
        stacks[-1].append(frame)
        previous = distance
    return stacks


def assemble_frames(frames: list[Frame], *, uneven_slices: bool = False) -> Volume:
    """Stack frames of one series into a Volume (see read_dicom_series).

    The slices must lie along their normal without in-plane shifts. On a regular grid unless `uneven_slices`: then
    slices at uneven distances (e.g. gaps of 16 then 13 mm) are stacked at the mean spacing from the first slice,
    their true distances kept in metadata "slice_positions_mm" and a note in metadata "notes" (for per-slice work
    such as T1 fitting, where each slice stands alone). InputError otherwise, naming the slice and its offset.
    """
    _check_consistent(frames)
    first = frames[0]
    row, column = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, column)
    tolerance = POSITION_TOLERANCE * float(first.pixel_spacing.min())
    stacks = group_by_position(frames)
    counts = [len(stack) for stack in stacks]
    if len(set(counts)) > 1:
        raise InputError(f"slice positions hold different numbers of images ({counts}, from the first slice on); "
                         f"a slice or a time point is missing among {frame_names(frames)}")
    stacks = _order_in_time(stacks)

    origin = stacks[0][0].position
    distances = [float((stack[0].position - origin) @ normal) for stack in stacks]
    slice_spacing = distances[-1] / (len(stacks) - 1) if len(stacks) > 1 else first.slice_spacing or 1.0
    notes = []
    for index, stack in enumerate(stacks):
        for frame in stack:
            along = float((frame.position - origin) @ normal)
            shift = float(np.linalg.norm(frame.position - origin - along * normal))
            if shift > tolerance:
                raise InputError(f"{frame.label}: slice {index} is shifted {shift:.3f} mm in-plane from the first "
                                 "slice's axis; these images cannot form one volume")
            offset = abs(along - index * slice_spacing)
            if offset > tolerance and not uneven_slices:
                gaps = ", ".join(f"{gap:.2f}" for gap in np.diff(distances))
                raise InputError(f"{frame.label}: slice {index} lies {offset:.3f} mm off a regular grid of "
                                 f"{slice_spacing:.3f} mm slice spacing (gaps between slices: {gaps} mm; uneven "
                                 "spacing or a missing slice); these images cannot form one volume")
    if len(stacks) > 2 and np.ptp(np.diff(distances)) > tolerance:
        gaps = ", ".join(f"{gap:.2f}" for gap in np.diff(distances))
        worst = max(abs(distance - index * slice_spacing) for index, distance in enumerate(distances))
        notes.append(f"the slices are unevenly spaced (gaps {gaps} mm): each slice was processed on its own at its "
                     f"true position; the output volume stacks them at an even {slice_spacing:.2f} mm from the first "
                     f"slice, so a slice there lies up to {worst:.2f} mm from its true position (true positions "
                     "along the slice normal: slice_positions_mm)")
    notes.extend(dict.fromkeys(note for frame in frames for note in frame.time_notes))

    ordered = [[stack[time] for stack in stacks] for time in range(counts[0])]  # (t, z)
    rescale = any(frame.slope != 1 or frame.intercept != 0 for frame in frames)
    array = np.stack([np.stack([(frame.pixels * frame.slope + frame.intercept).astype(np.float32) if rescale
                                else frame.pixels for frame in frames_at_time]) for frames_at_time in ordered])

    def times(attribute: str) -> list | None:
        values = [[getattr(frame, attribute) for frame in frames_at_time] for frames_at_time in ordered]
        if all(value is None for at_time in values for value in at_time):
            return None
        return values[0] if len(values) == 1 else values

    metadata = {**first.header, "inversion_times_ms": times("inversion_time"),
                "trigger_times_ms": times("trigger_time"), "instance_numbers": times("instance_number"),
                "slice_positions_mm": distances, "notes": notes,
                "source_files": list(dict.fromkeys(frame.file for at_time in ordered for frame in at_time))}
    if first.units:
        metadata["units"] = first.units
    metadata.update(slice_thickness_metadata(frames))
    return Volume(array[0] if len(ordered) == 1 else array,
                  spacing=(first.pixel_spacing[1], first.pixel_spacing[0], slice_spacing), origin=origin,
                  direction=np.column_stack([row, column, normal]).ravel(), metadata=metadata)

"""DICOM images (pydicom) -> Volume: single-frame series and enhanced multi-frame files.

Every image, a single-frame file or one frame of a multi-frame file, becomes a `Frame` with its own geometry,
rescale and times. `assemble_frames` checks that the frames form one series on one regular grid, orders them along
the slice normal (and in time where several share a position) and stacks them as (z, y, x) or (t, z, y, x).
Geometry is LPS, as ITK reads DICOM: origin = first slice's ImagePositionPatient, direction columns = row
direction, column direction, slice normal (row x column).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.tag import Tag

from ..errors import InputError
from ..volume import Volume

POSITION_TOLERANCE = 0.05  # largest allowed slice misplacement, as a fraction of the smaller pixel spacing
# Philips keeps each MOLLI image's inversion time only in a private element: (2005,xx72) of this creator, in ms.
PHILIPS_TI_CREATOR, PHILIPS_TI_ELEMENT = "Philips MR Imaging DD 006", 0x72


@dataclasses.dataclass
class Frame:
    """One 2D image with what is needed to place it. Lengths in mm, times in ms, vectors in LPS."""

    file: str
    label: str  # the file, plus the frame number for a multi-frame file (for messages)
    header: dict[str, Any]  # series-level metadata: modality, series_description, series_instance_uid
    image_type: tuple[str, ...]  # ImageType values, upper case (e.g. ORIGINAL, PRIMARY, M, ...)
    instance_number: int | None  # InstanceNumber: acquisition order within the series (frames share it)
    units: str | None  # RescaleType, unless unspecified ("US")
    pixels: np.ndarray  # (rows, columns) stored values
    position: np.ndarray  # (3,) ImagePositionPatient: centre of the first pixel
    orientation: np.ndarray  # (6,) ImageOrientationPatient: row direction, then column direction
    pixel_spacing: np.ndarray  # (2,) PixelSpacing: (between rows, between columns)
    slice_spacing: float | None  # SpacingBetweenSlices or SliceThickness, used for a single slice only
    slope: float
    intercept: float
    inversion_time: float | None  # InversionTime, else the Philips private per-image TI, when positive
    inversion_source: str | None  # the element it came from, for messages and provenance
    trigger_time: float | None


def is_dicom_file(path: str | Path) -> bool:
    """True for a *.dcm name or a file whose bytes 128-131 are the DICOM prefix b'DICM'."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as stream:
            return stream.read(132)[128:] == b"DICM"
    except OSError:
        return False


def read_dicom_series(paths_or_dir: str | Path | Iterable[str | Path]) -> Volume:
    """Read one DICOM series into a Volume.

    paths_or_dir: a folder (its DICOM files, not recursive; other files are skipped), one file, or a list
    of files. Images are ordered by position along the slice normal; images sharing a position must differ
    in InversionTime or TriggerTime and give a (t, z, y, x) array ordered by that time. A multi-frame
    (enhanced) file gives one image per frame, placed by its functional groups. Rescale slope/intercept
    are applied (float32 result) unless all are 1/0 (stored dtype kept).
    Metadata: modality, series_description, series_instance_uid, source_files, units (RescaleType, when
    given), inversion_times_ms (InversionTime, else Philips private (2005,1572)), trigger_times_ms and
    instance_numbers: per slice [z] for 3D or [t][z] for 4D, an entry None where the image lacks the tag, and
    None when no image has it.
    Raises InputError naming the file and the reason.
    """
    files = list_dicom_files(paths_or_dir)
    return assemble_frames([frame for path in files for frame in read_frames(path)])


def list_dicom_files(paths_or_dir: str | Path | Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """The files to read: a folder's DICOM files (sorted by path; with `recursive`, in sub-folders too), or the
    given file(s)."""
    if isinstance(paths_or_dir, (str, Path)):
        path = Path(paths_or_dir)
        if not path.is_dir():
            return [path]
        found = path.rglob("*") if recursive else path.iterdir()
        files = sorted(p for p in found if p.is_file() and p.name != "DICOMDIR" and is_dicom_file(p))
        if not files:
            raise InputError(f"{path}: the folder holds no DICOM files")
        return files
    files = [Path(p) for p in paths_or_dir]
    if not files:
        raise InputError("no DICOM files were given")
    return files


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


def read_frames(path: Path) -> list[Frame]:
    """All images of one DICOM file (one per frame), with pixels decoded."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        dataset = pydicom.dcmread(path)
    except Exception as err:  # pydicom signals corrupt input with many exception types
        raise InputError(f"{path}: not a readable DICOM file ({err})") from err
    for keyword in ("Rows", "Columns", "PixelData"):
        if keyword not in dataset:
            raise InputError(f"{path}: {tag_name(keyword)} is missing (not an image, or the file is truncated)")
    if dataset.get("SamplesPerPixel", 1) != 1:
        raise InputError(f"{path}: colour images are not supported (SamplesPerPixel {dataset.SamplesPerPixel})")
    count = int(dataset.get("NumberOfFrames") or 1)
    if count > 1 and "PerFrameFunctionalGroupsSequence" not in dataset:
        raise InputError(f"{path}: multi-frame file without {tag_name('PerFrameFunctionalGroupsSequence')}; "
                         "the frames cannot be placed")
    try:
        pixels = dataset.pixel_array.reshape(count, dataset.Rows, dataset.Columns)
    except Exception as err:  # decoders raise many exception types on corrupt or truncated pixel data
        raise InputError(f"{path}: the pixel data cannot be decoded ({err})") from err
    header = {"modality": dataset.get("Modality"), "series_description": dataset.get("SeriesDescription"),
              "series_instance_uid": dataset.get("SeriesInstanceUID")}
    header = {key: str(value) if value is not None else None for key, value in header.items()}
    rescale_type = _lookup(dataset, 0, "RescaleType", "PixelValueTransformationSequence")
    units = str(rescale_type) if rescale_type not in (None, "US") else None
    return [_frame(dataset, path, index, count, pixels[index], header, units) for index in range(count)]


def _philips_inversion_time(dataset: pydicom.Dataset) -> float | None:
    """The Philips private per-image inversion time in ms, when the file has it and it is positive."""
    try:
        value = dataset.private_block(0x2005, PHILIPS_TI_CREATOR)[PHILIPS_TI_ELEMENT].value
        value = float(np.asarray(value, dtype=float).ravel()[0])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return value if np.isfinite(value) and value > 0 else None


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
        if found.size != size:
            raise InputError(f"{label}: {tag_name(keyword)} must hold {size} numbers; got {found.tolist()}")
        return found

    def number(keyword: str, sequence: str | None = None) -> float | None:
        found = values(keyword, sequence)
        return None if found is None or found.size == 0 else float(found[0])

    orientation = numbers("ImageOrientationPatient", "PlaneOrientationSequence", 6)
    row, column = orientation[:3], orientation[3:]
    if max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(column) - 1), abs(row @ column)) > 1e-3:
        raise InputError(f"{label}: {tag_name('ImageOrientationPatient')} is not two orthogonal unit vectors: "
                         f"{orientation}")
    spacings = [number(keyword, "PixelMeasuresSequence") for keyword in ("SpacingBetweenSlices", "SliceThickness")]
    slope = number("RescaleSlope", "PixelValueTransformationSequence")
    intercept = number("RescaleIntercept", "PixelValueTransformationSequence")
    inversion, source = number("InversionTimes", "MRModifierSequence"), tag_name("InversionTimes")  # enhanced MR
    if inversion is None:
        inversion, source = number("InversionTime"), tag_name("InversionTime")
    if inversion is None or inversion <= 0:
        inversion, source = _philips_inversion_time(dataset), "Philips private (2005,1572)"
    trigger = number("NominalCardiacTriggerDelayTime", "CardiacSynchronizationSequence")  # enhanced MR
    instance = number("InstanceNumber")
    return Frame(
        file=str(path), label=label, header=header, units=units, pixels=pixels,
        image_type=tuple(str(value).upper() for value in (dataset.get("ImageType") or ())),
        instance_number=None if instance is None else int(instance),
        position=numbers("ImagePositionPatient", "PlanePositionSequence", 3), orientation=orientation,
        pixel_spacing=numbers("PixelSpacing", "PixelMeasuresSequence", 2),
        slice_spacing=next((value for value in spacings if value and value > 0), None),
        slope=1.0 if slope is None else slope, intercept=0.0 if intercept is None else intercept,
        inversion_time=inversion, inversion_source=source if inversion is not None else None,
        trigger_time=number("TriggerTime") if trigger is None else trigger,
    )


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
    """Each position's frames sorted by the time (InversionTime, else TriggerTime) that tells them apart."""
    if len(stacks[0]) == 1:
        return stacks
    for attribute in ("inversion_time", "trigger_time"):
        times = [[getattr(frame, attribute) for frame in stack] for stack in stacks]
        if all(None not in values and len(set(values)) == len(values) for values in times):
            return [sorted(stack, key=lambda frame: getattr(frame, attribute)) for stack in stacks]
    raise InputError(f"{len(stacks[0])} images share each slice position ({frame_names(stacks[0])}) but do not differ in "
                     f"{tag_name('InversionTime')} or {tag_name('TriggerTime')}, so they cannot be ordered in time")


def group_by_position(frames: list[Frame]) -> list[list[Frame]]:
    """Frames grouped by slice position, positions in increasing order along the first frame's slice normal
    (positions closer than POSITION_TOLERANCE pixel spacings count as one); each group in input order."""
    first = frames[0]
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    tolerance = POSITION_TOLERANCE * float(first.pixel_spacing.min())
    stacks: list[list[Frame]] = []
    previous = None
    for frame in sorted(frames, key=lambda frame: float(frame.position @ normal)):
        distance = float(frame.position @ normal)
        if previous is None or distance - previous > tolerance:
            stacks.append([])
        stacks[-1].append(frame)
        previous = distance
    return stacks


def assemble_frames(frames: list[Frame]) -> Volume:
    """Stack frames of one series into a Volume on a regular grid (see read_dicom_series)."""
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
    if len(stacks) > 1:
        slice_spacing = float((stacks[-1][0].position - origin) @ normal) / (len(stacks) - 1)
    else:
        slice_spacing = first.slice_spacing or 1.0
    for index, stack in enumerate(stacks):
        for frame in stack:
            offset = float(np.linalg.norm(frame.position - (origin + index * slice_spacing * normal)))
            if offset > tolerance:
                raise InputError(f"{frame.label}: slice {index} lies {offset:.3f} mm off a regular grid of "
                                 f"{slice_spacing:.3f} mm slice spacing (uneven spacing, a missing slice or shifted "
                                 "slices); these images cannot form one volume")

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
                "source_files": list(dict.fromkeys(frame.file for at_time in ordered for frame in at_time))}
    if first.units:
        metadata["units"] = first.units
    return Volume(array[0] if len(ordered) == 1 else array,
                  spacing=(first.pixel_spacing[1], first.pixel_spacing[0], slice_spacing), origin=origin,
                  direction=np.column_stack([row, column, normal]).ravel(), metadata=metadata)

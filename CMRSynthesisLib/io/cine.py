"""Cine series: frames x slices x rows x cols with the trigger time of every frame.

A cine is a `Volume` whose array is (t, z, y, x) and whose metadata "trigger_times_ms" holds t floats, strictly
increasing: the nominal time of each frame after the R wave. Where the slices were timed differently (each slice in
its own breath-hold and heartbeat), metadata "trigger_times_by_slice_ms" holds t lists of z times and the nominal
times are their per-frame median. Optional metadata: "rr_interval_ms", "time_source" (where the times came from),
"notes" (what was assumed or fallen back on), "skipped" (what was left out, and why), "source_files",
"slice_positions_mm" (true slice distances along the normal from the first slice, DICOM only).

DICOM cine folders are read as archives hold them (see `read_cine`): one series per slice or one for all, repeated
stacks, long-axis and localizer images beside the short-axis stack, slices on other in-plane grids, missing or
meaningless TriggerTime, enhanced multi-frame files. 4D NIfTI / NRRD files hold time last on disk; their frame
timing comes from the header or from a JSON sidecar `<stem>.json` beside the file, which `write_cine` always writes.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ..errors import InputError, OutputError
from ..volume import Volume
from .dicom import (
    POSITION_TOLERANCE,
    Frame,
    frame_names,
    group_by_position,
    is_dicom_file,
    keep_magnitude,
    read_image_frames,
    slice_thickness_metadata,
    tag_name,
)
from .itk_files import error_reason, itk_suffix, read_itk_file, to_sitk
from .writing import check_output_paths

__all__ = ["CINE_SUFFIXES", "check_cine", "read_cine", "read_cine_frames", "sidecar_path", "times_to_ms",
           "write_cine"]

CINE_SUFFIXES = (".nii", ".nii.gz", ".nrrd")  # written by write_cine
PARALLEL_DEGREES = 1.0  # slices whose normals differ by more are in another plane
MIN_FRAME_STEP_MS = 5.0  # trigger times of one slice closer than this are no cine frame interval
MAX_RR_MS = 3000.0  # without NominalInterval, a trigger time beyond this (a heart rate of 20 / min) is no trigger time
RR_MARGIN = 1.2  # trigger times may run this much past the nominal RR interval (the RR varies during the scan)
SLICE_TIME_TOLERANCE_MS = 1e-3  # slices whose times differ by more get "trigger_times_by_slice_ms"
# frames count as evenly spaced (one interval in the file header) when their steps differ by at most this: times are
# often stored rounded (DICOM TriggerTime to 0.01 or 1 ms), which makes the steps of a regular cine differ a little
FRAME_STEP_TOLERANCE_MS = 1.0
FRAME_STEP_TOLERANCE_FRACTION = 0.02
TIME_UNITS_TO_MS = {"ms": 1.0, "msec": 1.0, "millisecond": 1.0, "milliseconds": 1.0, "s": 1000.0, "sec": 1000.0,
                    "second": 1000.0, "seconds": 1000.0, "us": 1e-3, "usec": 1e-3}
_NIFTI_XYZT_UNITS_OFFSET = 123  # byte of the NIfTI-1 header holding the space (bits 0-2) and time (3-5) units
# Sources of the frame order when TriggerTime cannot be used, in precedence: name, value of a frame, is a clock.
_ORDER_SOURCES: tuple[tuple[str, Any, bool], ...] = (
    ("the acquisition date and time", lambda frame: frame.acquisition_datetime, True),
    (tag_name("AcquisitionTime"), lambda frame: frame.acquisition_time_of_day, True),
    (tag_name("ContentTime"), lambda frame: frame.content_time_of_day, True),
    ("the frame order in the multi-frame file",
     lambda frame: None if frame.frame_number is None else (frame.file, frame.frame_number), False),
    (tag_name("InstanceNumber"), lambda frame: frame.instance_number, False),
)


@dataclasses.dataclass
class _Slice:
    """The frames of one slice position (one acquisition) and their distance along the stack normal (mm)."""

    frames: list[Frame]
    distance: float


def read_cine(path: str | Path | Sequence[str | Path], *, frame_interval_ms: float | None = None) -> Volume:
    """Read a cine: a DICOM folder (sub-folders too, files recognised by content), a list of DICOM files, or a 4D
    NIfTI (.nii, .nii.gz) / NRRD (.nrrd, .nhdr) file with time last on disk.

    Returns a (t, z, y, x) Volume with metadata "trigger_times_ms" (see the module docstring); the stored values
    (float32 where rescaled or resampled), geometry in LPS.

    DICOM: magnitude images are kept (phase / real / imaginary, duplicates, screen captures and non-images are
    listed in metadata "skipped"). Images in planes more than PARALLEL_DEGREES from the majority's (long-axis views,
    localizers) are left out and listed. The slices are the distinct positions along the normal (ImagePositionPatient
    . normal; SliceLocation and z are never used), assembled across the series of one study. Where a position was
    acquired more than once (another SeriesInstanceUID / SeriesNumber, AcquisitionNumber or CardiacNumberOfImages),
    one stack is kept: the most complete, then the latest series (and acquisition); the others are listed in
    "skipped" and a note says which was used. Slices on another in-plane grid (matrix, pixel spacing, in-plane
    direction or shift) are resampled (linear) onto the grid of the majority's slices, with a note. Frames are
    ordered and timed by TriggerTime (NominalCardiacTriggerDelayTime in enhanced files) when it is present, distinct
    and within one heartbeat in every slice; otherwise they are ordered by the acquisition clock, the multi-frame
    order or, last, InstanceNumber, and spaced by `frame_interval_ms`, else NominalInterval / CardiacNumberOfImages,
    else by the acquisition clock, with a warning in "notes".
    4D file: times from the file (a Slicer sequence's index values, this library's NRRD field), else the sidecar's
    "trigger_times_ms", else the header's frame interval (NIfTI pixdim[4] in a time unit with toffset; an NRRD
    "...-time" space with its unit), else the sidecar's "frame_interval_ms", else `frame_interval_ms`.

    Raises InputError naming the files and the reason: slices with different numbers of images or fewer than
    CardiacNumberOfImages (never padded; see read_cine_frames for a partial cine), frames of one slice on changing
    geometry, images of several studies, no usable times (asks for frame_interval_ms), a 3D file.
    """
    return _read(path, frame_interval_ms, partial=False)


def read_cine_frames(path: str | Path | Sequence[str | Path], *, frame_interval_ms: float | None = None) -> Volume:
    """Read the frames that exist of an incomplete DICOM cine (e.g. the end-diastolic images of every slice, when the
    archive kept only the contoured phases) as a cine with fewer frames than CardiacNumberOfImages; a one-frame cine
    is allowed. As `read_cine` otherwise; a note says how many of the phases are present. Every slice must hold the
    same number of frames: InputError listing each slice's trigger times otherwise. A 4D file is read as read_cine
    does."""
    return _read(path, frame_interval_ms, partial=True)


def read_cine_or_stack(path: str | Path, frame_interval_ms: float | None = None) -> Volume:
    """A cine (t, z, y, x) from a 4D NIfTI / NRRD file or a DICOM cine (a folder or file, the phases present, so a
    single DICOM image is a one-frame cine), or a 3D (z, y, x) stack from a 3D NIfTI / NRRD / MetaImage file: what
    a method that takes a cine or one frame of it reads. Raises InputError as `read_cine` / `read_itk_file`."""
    if not Path(path).exists():
        raise InputError(f"{path}: no such file or folder")
    if itk_suffix(path):
        volume = read_itk_file(path)
        return read_cine(path, frame_interval_ms=frame_interval_ms) if volume.array.ndim == 4 else volume
    return read_cine_frames(path, frame_interval_ms=frame_interval_ms)


def check_cine(volume: Volume, what: str = "the cine", *, min_frames: int = 2, task: str | None = None,
               finite: bool = True) -> None:
    """Raise InputError unless `volume` is a usable cine: a 4D (t, z, y, x) array of at least `min_frames` frames,
    metadata "trigger_times_ms" with one finite time per frame, strictly increasing ("trigger_times_by_slice_ms",
    when present: t lists of z times, each slice's increasing), and finite real voxels (unless `finite` is False: a
    map over time with NaN where it has no value). what: the cine's role in messages; task: what needs the frames
    ("strain"), for the message about too few."""
    name = volume.named(what)
    if volume.array.ndim != 4:
        raise InputError(f"{name} is a 3D image of shape {volume.array.shape} (z, y, x), not a cine: a cine is 4D "
                         "(time, z, y, x)")
    count = volume.array.shape[0]
    if count < min_frames:
        raise InputError(f"{name} has {count} frame{'s' if count != 1 else ''}; {task or 'this'} needs at least "
                         f"{min_frames}")
    times = volume.metadata.get("trigger_times_ms")
    if times is None:
        raise InputError(f"{name} has no trigger times (metadata trigger_times_ms)")
    _check_times(times, count, f"{name}: trigger_times_ms")
    by_slice = volume.metadata.get("trigger_times_by_slice_ms")
    if by_slice is not None:
        values = np.asarray(by_slice, dtype=float)
        if values.shape != volume.array.shape[:2]:
            raise InputError(f"{name}: trigger_times_by_slice_ms has shape {values.shape}; expected "
                             f"{volume.array.shape[:2]} (frames, slices)")
        for z in range(values.shape[1]):
            _check_times(values[:, z], count, f"{name}: trigger_times_by_slice_ms of slice {z}")
    if finite:
        volume.require_finite(what)


def _check_times(times: Iterable, count: int, where: str) -> None:
    """`count` finite, strictly increasing times, or InputError naming `where`."""
    try:
        values = np.asarray(list(times), dtype=float)
    except (TypeError, ValueError) as err:
        raise InputError(f"{where} must be numbers (ms); got {times!r}") from err
    if values.ndim != 1 or values.size != count:
        raise InputError(f"{where} holds {values.size} value(s) for {count} frame(s)")
    if not np.all(np.isfinite(values)):
        raise InputError(f"{where} holds values that are not finite: {values.tolist()}")
    if np.any(np.diff(values) <= 0):
        raise InputError(f"{where} must increase from frame to frame; got {values.tolist()}")


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of an image file: `<stem>.json` beside it (cine.nii.gz -> cine.json)."""
    path = Path(path)
    suffix = itk_suffix(path) or path.suffix
    return path.with_name(path.name[:len(path.name) - len(suffix)] + ".json")


def times_to_ms(values: Sequence[str | float], unit: str | None, where: str) -> list[float] | None:
    """Time values in `unit` ("ms", "s", ... any case; see TIME_UNITS_TO_MS) as ms; None when the unit is no time
    unit. InputError naming `where` when a value is not a number."""
    factor = TIME_UNITS_TO_MS.get((unit or "").strip().lower())
    if factor is None:
        return None
    try:
        return [float(value) * factor for value in values]
    except (TypeError, ValueError) as err:
        raise InputError(f"{where}: the time values {list(values)!r} are not all numbers") from err


def regular_interval(times: Sequence[float]) -> float | None:
    """The frame interval (ms) of frame times that are evenly spaced within FRAME_STEP_TOLERANCE_MS or
    FRAME_STEP_TOLERANCE_FRACTION of their mean step (whichever is larger); None for irregular times or one frame."""
    steps = np.diff(np.asarray(times, dtype=float))
    if not steps.size:
        return None
    mean = float(np.mean(steps))
    return mean if np.ptp(steps) <= frame_step_tolerance(mean) else None


def frame_step_tolerance(interval_ms: float) -> float:
    """How far frame steps may differ (ms) and still be one interval: FRAME_STEP_TOLERANCE_MS or
    FRAME_STEP_TOLERANCE_FRACTION of the interval, whichever is larger."""
    return max(FRAME_STEP_TOLERANCE_MS, FRAME_STEP_TOLERANCE_FRACTION * abs(float(interval_ms)))


def write_cine(cine: Volume, path: str | Path, *, protected: Iterable[str | Path] = (), maps: bool = False) -> Path:
    """Write a cine as a 4D NIfTI (.nii, .nii.gz) or NRRD (.nrrd) file, time last on disk, and its JSON sidecar
    `<stem>.json` ("trigger_times_ms", plus "frame_interval_ms" when regular, "rr_interval_ms" and
    "trigger_times_by_slice_ms" when known, "field_strength_t"; and for frames chosen from a longer cine, such as a
    segmentation of ED and ES, "frames": the source frame of each frame, from 0, and "ed_frame" / "es_frame": the
    source frames of ED and ES). Returns the image path.

    The header holds the frame timing too: NIfTI pixdim[4] (s, as ITK writes it) and toffset when the frames are
    evenly spaced (otherwise the time unit is cleared, so no reader takes a wrong interval); NRRD the interval as the
    4th axis spacing (ms) and a "trigger_times_ms" field. Both files are written to temporaries and moved into place
    only when both are complete. maps: the frames are maps over time (strain) that hold NaN where they have no value.
    Raises InputError for an unusable cine (check_cine), OutputError for another
    suffix, a protected input (or an input's sidecar), or a path that cannot be written.
    """
    check_cine(cine, "the cine to write", min_frames=1, finite=not maps)
    path = Path(path)
    suffix = itk_suffix(path, CINE_SUFFIXES)
    if suffix is None:
        raise OutputError(f"{path}: a cine is written as 4D NIfTI (.nii, .nii.gz) or NRRD (.nrrd)")
    sidecar = sidecar_path(path)
    protected = [Path(item) for item in protected]
    protected += [sidecar_path(item) for item in protected if itk_suffix(item)]
    check_output_paths([path], protected=protected)
    check_output_paths([sidecar], protected=protected, images=False)
    times = [float(time) for time in cine.metadata["trigger_times_ms"]]
    interval = regular_interval(times)
    nifti = suffix.startswith(".nii")
    to_file_unit = 1e-3 if nifti else 1.0  # ITK's NIfTI writer stores seconds
    try:
        image = to_sitk(cine)
    except (TypeError, RuntimeError) as err:
        raise OutputError(f"{path}: cannot store an array of dtype {cine.array.dtype} ({error_reason(err)})") from err
    image.SetSpacing((*cine.spacing, (interval or 1.0) * to_file_unit))
    image.SetOrigin((*cine.origin, times[0] * to_file_unit))
    if not nifti:
        image.SetMetaData("trigger_times_ms", " ".join(repr(time) for time in times))
    record: dict[str, Any] = {"trigger_times_ms": times}
    if interval is not None:
        record["frame_interval_ms"] = interval
    for key in ("rr_interval_ms", "trigger_times_by_slice_ms", "field_strength_t"):
        if cine.metadata.get(key) is not None:
            record[key] = np.asarray(cine.metadata[key], dtype=float).tolist()
    for key in ("frames", "ed_frame", "es_frame"):
        if cine.metadata.get(key) is not None:
            record[key] = np.asarray(cine.metadata[key], dtype=int).tolist()
    tag = uuid.uuid4().hex[:12]
    image_temporary = path.with_name(f".{path.name[:-len(suffix)]}-{tag}.partial{suffix}")
    sidecar_temporary = sidecar.with_name(f".{sidecar.name}-{tag}.partial")
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(image_temporary), useCompression=suffix != ".nii")
            if nifti and interval is None and len(times) > 1:
                _clear_nifti_time_unit(image_temporary)
            sidecar_temporary.write_text(json.dumps(record, indent=1) + "\n")
        except (RuntimeError, OSError) as err:
            raise OutputError(f"{path}: could not be written ({error_reason(err)})") from err
        os.replace(image_temporary, path)
        os.replace(sidecar_temporary, sidecar)
    finally:
        image_temporary.unlink(missing_ok=True)
        sidecar_temporary.unlink(missing_ok=True)
    return path


def _clear_nifti_time_unit(path: Path) -> None:
    """Set the time unit of a NIfTI-1 file's xyzt_units to unknown (pixdim[4] is then no frame interval)."""
    compressed = path.name.lower().endswith(".gz")
    data = bytearray(gzip.decompress(path.read_bytes()) if compressed else path.read_bytes())
    data[_NIFTI_XYZT_UNITS_OFFSET] &= 0x07
    path.write_bytes(gzip.compress(bytes(data)) if compressed else bytes(data))


def _read(path: str | Path | Sequence[str | Path], frame_interval_ms: float | None, partial: bool) -> Volume:
    if frame_interval_ms is not None and not (np.isfinite(frame_interval_ms) and frame_interval_ms > 0):
        raise InputError(f"the frame interval must be a positive number of ms; got {frame_interval_ms}")
    single = isinstance(path, (str, Path)) and Path(path).is_file()
    if single and itk_suffix(path):
        cine = _read_file(Path(path), frame_interval_ms)
    elif single and not is_dicom_file(path):
        raise InputError(f"{path}: not a cine file (expected a DICOM folder or files, or a 4D NIfTI / NRRD file)")
    else:
        cine = _read_dicom(path, frame_interval_ms, partial)
    check_cine(cine, min_frames=1)
    return cine


# ---- DICOM -------------------------------------------------------------------------------------------------------


def _read_dicom(path: str | Path | Sequence[str | Path], frame_interval_ms: float | None, partial: bool) -> Volume:
    """A cine Volume from the DICOM images at `path` (see read_cine)."""
    frames, skipped = read_image_frames(path, recursive=True)
    frames, components = keep_magnitude(frames)
    _check_one_study(frames)
    frames, other_planes = _parallel_majority(frames)
    slices, repeated, notes = _pick_stack(frames)
    _refuse_inversion_series(slices)
    notes += _check_phase_counts(slices, partial)
    slices, geometry = _grid(slices)
    times, rr, time_source, time_notes = _frame_times(slices, frame_interval_ms, partial)
    array, grid_notes = _stack(slices, geometry)
    nominal = np.median(times, axis=1)
    first = slices[0].frames[0]
    metadata: dict[str, Any] = {
        "modality": first.header.get("modality"), "series_description": first.header.get("series_description"),
        "series_instance_uids": list(dict.fromkeys(frame.header.get("series_instance_uid") for item in slices
                                                   for frame in item.frames)),
        "trigger_times_ms": [float(time) for time in nominal], "time_source": time_source,
        "slice_positions_mm": geometry["positions"],
        "notes": notes + geometry["notes"] + grid_notes + time_notes,
        "skipped": skipped + components + other_planes + repeated,
        "source_files": list(dict.fromkeys(item.frames[t].file for t in range(len(slices[0].frames))
                                           for item in slices)),
    }
    metadata.update(slice_thickness_metadata(frame for item in slices for frame in item.frames))
    frames_of_reference = {frame.header.get("frame_of_reference_uid") for item in slices for frame in item.frames}
    if len(frames_of_reference) == 1 and None not in frames_of_reference:
        metadata["frame_of_reference_uid"] = frames_of_reference.pop()
    if np.max(np.abs(times - nominal[:, None])) > SLICE_TIME_TOLERANCE_MS:
        metadata["trigger_times_by_slice_ms"] = times.tolist()
    if rr is not None:
        metadata["rr_interval_ms"] = rr
    if first.units:
        metadata["units"] = first.units
    field = _field_strength(first.header.get("magnetic_field_strength"))
    if field is not None:
        metadata["field_strength_t"] = field
    return Volume(array, geometry["spacing"], geometry["origin"], geometry["direction"], metadata)


def _field_strength(value: str | None) -> float | None:
    """MagneticFieldStrength (T) as a number; None when absent or not a plausible field (0.1-12 T: some scanners
    write gauss or nothing)."""
    try:
        field = float(value) if value is not None else None
    except ValueError:
        return None
    return field if field is not None and 0.1 <= field <= 12.0 else None


def _normal(frame: Frame) -> np.ndarray:
    return np.cross(frame.orientation[:3], frame.orientation[3:])


def _check_one_study(frames: list[Frame]) -> None:
    """InputError when the images come from several studies (StudyInstanceUID)."""
    studies: dict[str, list[Frame]] = {}
    for frame in frames:
        if frame.study_instance_uid:
            studies.setdefault(frame.study_instance_uid, []).append(frame)
    if len(studies) > 1:
        examples = "; ".join(frame_names(members, 1) for members in studies.values())
        raise InputError(f"the input holds images of {len(studies)} studies ({tag_name('StudyInstanceUID')} differs: "
                         f"{examples}); give the cine of one study")


def _parallel_majority(frames: list[Frame]) -> tuple[list[Frame], list[str]]:
    """The largest group of images in parallel planes (normals within PARALLEL_DEGREES, either sign), and one line per
    group left out (long-axis views, localizers) naming its angle and files."""
    groups: list[list[Frame]] = []
    cosine = np.cos(np.radians(PARALLEL_DEGREES))
    for frame in frames:
        group = next((group for group in groups if abs(_normal(frame) @ _normal(group[0])) >= cosine), None)
        if group is None:
            groups.append([frame])
        else:
            group.append(frame)
    kept = max(groups, key=len)
    skipped = []
    for group in groups:
        if group is not kept:
            angle = np.degrees(np.arccos(min(1.0, abs(float(_normal(group[0]) @ _normal(kept[0]))))))
            skipped.append(f"{len(group)} image(s) in another plane ({angle:.0f} degrees from the {len(kept)} parallel "
                           f"images read: long-axis views or localizers): {frame_names(group)}")
    return kept, skipped


def _stack_key(frame: Frame, by_acquisition: bool) -> tuple:
    return (frame.header.get("series_instance_uid"), frame.series_number, frame.cardiac_images,
            frame.acquisition_number if by_acquisition else None)


def _describe_key(key: tuple, frames: list[Frame]) -> str:
    uid, number, _, acquisition = key
    description = frames[0].header.get("series_description")
    name = f"series {number}" if number is not None else f"series {uid}"
    name += f" '{description}'" if description else ""
    return name + (f" acquisition {acquisition}" if acquisition is not None else "")


def _pick_stack(frames: list[Frame]) -> tuple[list[_Slice], list[str], list[str]]:
    """The slices of one stack among parallel images, ordered along the normal, and what was left out (and why).

    Images are binned by position along the first image's normal; a stack key (series, CardiacNumberOfImages, and
    AcquisitionNumber where it splits a series into repeated runs of several images) tells acquisitions apart. Keys
    are taken acquired before synthetic (ImageType SYNTHETIC, as our DICOM export writes), then most complete
    (every slice as many images as CardiacNumberOfImages, then most slices, then most images), then latest series
    and acquisition number; a key whose positions overlap those taken is left out.
    """
    normal = _normal(frames[0])
    bins = group_by_position(frames)
    bin_of = {id(frame): index for index, members in enumerate(bins) for frame in members}
    series: dict[tuple, list[Frame]] = {}
    for frame in frames:
        series.setdefault((frame.header.get("series_instance_uid"), frame.series_number), []).append(frame)
    by_acquisition = {}
    for name, members in series.items():
        runs = Counter((bin_of[id(frame)], frame.acquisition_number) for frame in members)
        by_acquisition[name] = len({frame.acquisition_number for frame in members}) > 1 and min(runs.values()) >= 2
    stacks: dict[tuple, dict[int, list[Frame]]] = {}
    for members in bins:
        for frame in members:
            key = _stack_key(frame, by_acquisition[(frame.header.get("series_instance_uid"), frame.series_number)])
            stacks.setdefault(key, {}).setdefault(bin_of[id(frame)], []).append(frame)

    def preference(key: tuple) -> tuple:
        counts = [len(run) for run in stacks[key].values()]
        complete = len(set(counts)) == 1 and (key[2] is None or counts[0] >= key[2])
        acquired = not any("SYNTHETIC" in frame.image_type for run in stacks[key].values() for frame in run)
        return (acquired, complete, len(counts), 0 if complete else sum(counts), key[1] if key[1] is not None else -1,
                key[3] if key[3] is not None else -1)

    taken: dict[int, tuple] = {}
    kept, left = [], []
    for key in sorted(stacks, key=preference, reverse=True):
        overlap = [taken[index] for index in stacks[key] if index in taken]
        if overlap:
            left.append((key, overlap[0]))
            continue
        kept.append(key)
        taken.update((index, key) for index in stacks[key])
    slices = []
    for index in sorted(taken):
        run = stacks[taken[index]][index]
        _check_run(run)
        slices.append(_Slice(run, float(np.mean([frame.position @ normal for frame in run]))))

    def members(key: tuple) -> list[Frame]:
        return [frame for run in stacks[key].values() for frame in run]

    skipped = [f"{len(members(key))} image(s) of {_describe_key(key, members(key))} repeat slice positions of "
               f"{_describe_key(winner, members(winner))}: a repeated acquisition or a synthetic series, left out (an "
               f"acquired stack before a synthetic one, then the most complete, then the latest series): {frame_names(members(key))}"
               for key, winner in left]
    notes = []
    if left:
        used = ", ".join(_describe_key(key, members(key)) for key in kept[:3]) + (" and more" if len(kept) > 3 else "")
        notes.append(f"the input holds repeated acquisitions of the same slices; read {used} (the others are listed "
                     "in skipped)")
    return slices, skipped, notes


def _check_run(run: list[Frame]) -> None:
    """InputError unless the frames of one slice share one grid (matrix, pixel spacing, orientation, position)."""
    first = run[0]
    tolerance = POSITION_TOLERANCE * float(first.pixel_spacing.min())
    checks = (("Rows x Columns", lambda frame: frame.pixels.shape, lambda a, b: a == b),
              (tag_name("PixelSpacing"), lambda frame: frame.pixel_spacing, lambda a, b: np.allclose(a, b, atol=1e-4)),
              (tag_name("ImageOrientationPatient"), lambda frame: frame.orientation,
               lambda a, b: np.allclose(a, b, atol=1e-4)),
              (tag_name("ImagePositionPatient"), lambda frame: frame.position,
               lambda a, b: np.linalg.norm(a - b) <= tolerance))
    for name, value, same in checks:
        for frame in run[1:]:
            if not same(value(first), value(frame)):
                shown = [np.round(value(item), 4).tolist() if name != "Rows x Columns" else value(item)
                         for item in (first, frame)]
                raise InputError(f"the frames of one cine slice change geometry: {first.label} has {name} {shown[0]}, "
                                 f"{frame.label} has {shown[1]}; every frame of a slice must lie on one grid")


def _refuse_inversion_series(slices: list[_Slice]) -> None:
    """InputError when the images of a slice differ in inversion time: an inversion-recovery series (T1 mapping:
    MOLLI, ShMOLLI, SASHA, a TI scout), whose images lie heartbeats apart at different TIs, not the phases of one
    heartbeat."""
    for item in slices:
        times = sorted({round(frame.inversion_time, 1) for frame in item.frames if frame.inversion_time is not None})
        if len(times) > 1:
            source = next(frame.inversion_source for frame in item.frames if frame.inversion_source)
            shown = ", ".join(f"{time:g}" for time in times[:6]) + (", ..." if len(times) > 6 else "")
            raise InputError(f"{item.frames[0].label} and the other images of its slice differ in inversion time "
                             f"({source}: {shown} ms): an inversion-recovery series for T1 mapping (such as MOLLI), "
                             "not a cine; give the cine (bSSFP over one heartbeat)")


def _cardiac_images(slices: list[_Slice]) -> int | None:
    """The most common CardiacNumberOfImages of the images, None when none states it."""
    counts = Counter(frame.cardiac_images for item in slices for frame in item.frames if frame.cardiac_images)
    return counts.most_common(1)[0][0] if counts else None


def _check_phase_counts(slices: list[_Slice], partial: bool) -> list[str]:
    """InputError when the slices hold different numbers of images, or (unless `partial`) fewer than
    CardiacNumberOfImages; the message lists every slice's count. Returns notes (a partial cine, extra images)."""
    counts = [len(item.frames) for item in slices]
    expected = _cardiac_images(slices)
    name = tag_name("CardiacNumberOfImages")
    short = expected is not None and min(counts) < expected

    def listing(times: bool = False) -> str:
        return "; ".join(
            f"slice {z + 1} ({Path(item.frames[0].file).name}, {item.distance:.2f} mm along the normal): "
            + (", ".join(_ms(frame.trigger_time) for frame in item.frames) if times else
               f"{count}" + (f" of {expected}" if expected else "") + " image(s)")
            for z, (item, count) in enumerate(zip(slices, counts)))

    if len(set(counts)) > 1 and partial:
        raise InputError(f"the slices hold different numbers of frames (trigger times per slice: {listing(True)}); "
                         "a partial cine needs the same phases in every slice: give the files of the phases every "
                         "slice holds (e.g. the end-diastolic images)")
    if len(set(counts)) > 1 or (short and not partial):
        fewer = f"fewer images than {name} states ({expected}) in " if short else ""
        raise InputError(f"{fewer}{'some slices' if fewer else 'the slices hold different numbers of images'}: "
                         f"{listing()}; frames are never padded: export the complete series (or leave the incomplete "
                         "slices out); when every slice holds the same phases, the frames present can be segmented "
                         "(`cmrsynth segment` reads a partial cine; in Python, read_cine_frames)")
    notes = []
    if short:
        notes.append(f"a partial cine: {counts[0]} of the {expected} phases of every slice ({name}); the other phases "
                     "are not in the input")
    elif expected is not None and counts[0] > expected:
        notes.append(f"every slice holds {counts[0]} images, more than {name} ({expected}) says")
    return notes


def _ms(value: float | None) -> str:
    return "none" if value is None else f"{value:g} ms"


def _grid(slices: list[_Slice]) -> tuple[list[_Slice], dict[str, Any]]:
    """The slices in order along the normal of the reference grid (the in-plane grid most slices share; the first of
    them), and that grid: spacing, origin, direction, the slices' true distances from the first ("positions") and a
    note when they are unevenly spaced."""
    keys = [_grid_key(item.frames[0]) for item in slices]
    reference = slices[keys.index(Counter(keys).most_common(1)[0][0])].frames[0]
    row, column = reference.orientation[:3], reference.orientation[3:]
    normal = np.cross(row, column)
    slices = sorted(slices, key=lambda item: float(item.frames[0].position @ normal))
    distances = np.array([float(item.frames[0].position @ normal) for item in slices])
    positions = (distances - distances[0]).tolist()
    spacing = positions[-1] / (len(slices) - 1) if len(slices) > 1 else reference.slice_spacing or 1.0
    notes = []
    if len(slices) > 2 and np.ptp(np.diff(distances)) > POSITION_TOLERANCE * float(reference.pixel_spacing.min()):
        gaps = ", ".join(f"{gap:.2f}" for gap in np.diff(distances))
        notes.append(f"the slices are unevenly spaced (gaps {gaps} mm; a slice may be missing): they are stacked at an "
                     f"even {spacing:.2f} mm from the first; their true distances are in slice_positions_mm")
    origin = reference.position + (distances[0] - float(reference.position @ normal)) * normal
    return slices, {"reference": reference, "normal": normal, "distances": distances, "positions": positions,
                    "spacing": (reference.pixel_spacing[1], reference.pixel_spacing[0], spacing), "origin": origin,
                    "direction": np.column_stack([row, column, normal]).ravel(), "notes": notes}


def _grid_key(frame: Frame) -> tuple:
    return (frame.pixels.shape, tuple(np.round(frame.pixel_spacing, 4)), tuple(np.round(frame.orientation, 4)))


def _frame_times(slices: list[_Slice], frame_interval_ms: float | None, partial: bool
                 ) -> tuple[np.ndarray, float | None, str, list[str]]:
    """Order each slice's frames in time (in place) and time them: (t, z) times in ms, the nominal RR interval (ms,
    None when unknown), where the times came from, and a warning note when TriggerTime was not used (read_cine)."""
    intervals = [frame.nominal_interval for item in slices for frame in item.frames if frame.nominal_interval]
    rr = float(np.median(intervals)) if intervals else None
    enhanced = all(frame.frame_number is not None for item in slices for frame in item.frames)
    trigger = tag_name("NominalCardiacTriggerDelayTime") if enhanced else tag_name("TriggerTime")
    problem = _trigger_problem(slices, trigger, RR_MARGIN * rr if rr else MAX_RR_MS, rr)
    if problem is None:
        for item in slices:
            item.frames.sort(key=lambda frame: frame.trigger_time)
        times = np.array([[frame.trigger_time for frame in item.frames] for item in slices], dtype=float).T
        if frame_interval_ms is None:
            return times, rr, trigger, []
        unused = f"the frame interval given ({frame_interval_ms:g} ms) was not used: {trigger} times the frames"
        return times, rr, trigger, [unused]
    order, clock = _fallback_order(slices, problem)
    count, expected = len(slices[0].frames), _cardiac_images(slices)
    steps = np.arange(count, dtype=float)
    if frame_interval_ms is not None:
        times = np.repeat(steps[:, None] * frame_interval_ms, len(slices), axis=1)
        how = f"spaced {frame_interval_ms:g} ms apart (the frame interval given)"
    elif rr is not None and (expected is None or count >= expected):
        step = rr / count
        times = np.repeat(steps[:, None] * step, len(slices), axis=1)
        how = (f"spaced {step:g} ms apart ({tag_name('NominalInterval')} {rr:g} ms / {count} frames), first at 0 "
               "ms")
    elif clock is not None:
        values = np.array([[clock(frame) for frame in item.frames] for item in slices], dtype=float).T
        times = (values - values[:1]) * 1000.0
        how = ("timed by that clock (ms after each slice's first image: when each image was made, which need not be "
               "its cardiac phase)")
    else:
        partial_cine = rr is not None and expected is not None and count < expected
        where = (f"the phases present are a partial cine ({count} of {expected}), so "
                 f"{tag_name('NominalInterval')} cannot space them" if partial_cine
                 else f"no {tag_name('NominalInterval')} and no acquisition clock")
        raise InputError(f"no usable trigger times: {problem}; {where}, so the frames cannot be timed; give "
                         "the time between frames in ms (--frame-interval-ms; frame_interval_ms in Python)")
    note = f"{problem}: the frames were ordered by {order} and {how}"
    return times, rr, f"fallback: ordered by {order}, {how}", [note]


def _trigger_problem(slices: list[_Slice], name: str, limit: float, rr: float | None) -> str | None:
    """Why the trigger times (element `name`) cannot time the frames (missing, outside 0..limit ms, repeated within a
    slice, steps too small for a frame interval, equal to InstanceNumber), or None when they can."""
    bound = f"1.2 x {tag_name('NominalInterval')} {rr:g} ms" if rr else f"{MAX_RR_MS:g} ms"
    lacking = [frame for item in slices for frame in item.frames if frame.trigger_time is None]
    if lacking:
        total = sum(len(item.frames) for item in slices)
        extent = "every image" if len(lacking) == total else f"{len(lacking)} of the {total} images"
        return f"{name} is missing in {extent} ({frame_names(lacking)})"
    for z, item in enumerate(slices):
        values = [frame.trigger_time for frame in item.frames]
        where = f"slice {z + 1} ({frame_names(item.frames, 1)})"
        outside = [value for value in values if not 0 <= value <= limit]
        if outside:
            return f"{name} holds {outside[0]:g} ms in {where}: outside one heartbeat (0 to {bound})"
        if len(set(values)) == 1 and len(values) > 1:
            return f"{name} is {values[0]:g} ms in every image of {where}"
        repeated = [value for value, count in Counter(values).items() if count > 1]
        if repeated:
            return f"{name} repeats {repeated[0]:g} ms within {where}"
        if len(values) > 1 and np.diff(sorted(values)).min() < MIN_FRAME_STEP_MS:
            return (f"{name} steps by only {np.diff(sorted(values)).min():g} ms within {where}: no cine frame interval "
                    "(it may hold image numbers)")
        if len(values) > 1 and all(frame.trigger_time == frame.instance_number for frame in item.frames):
            return f"{name} equals {tag_name('InstanceNumber')} in every image of {where}"
    return None


def _fallback_order(slices: list[_Slice], problem: str) -> tuple[str, Any]:
    """Sort each slice's frames (in place) by the first of _ORDER_SOURCES present and distinct within every slice;
    returns its name and, for a clock, its value function (seconds). InputError when none is."""
    for name, value, is_clock in _ORDER_SOURCES:
        keys = [[value(frame) for frame in item.frames] for item in slices]
        if all(None not in row and len(set(row)) == len(row) for row in keys):
            for item in slices:
                item.frames.sort(key=value)
            return name, value if is_clock else None
    raise InputError(f"the frames cannot be ordered in time: {problem}, and no acquisition time, "
                     f"{tag_name('ContentTime')} or {tag_name('InstanceNumber')} tells the images of each slice apart "
                     f"({frame_names(slices[0].frames)})")


def _stack(slices: list[_Slice], grid: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """(t, z, rows, cols) array of the slices' frames, rescaled (float32 when any frame is), slices on another
    in-plane grid resampled onto the reference grid; notes naming the resampled slices."""
    reference, normal, distances = grid["reference"], grid["normal"], grid["distances"]
    reference_distance = float(reference.position @ normal)
    tolerance = POSITION_TOLERANCE * float(reference.pixel_spacing.min())
    resampled = {}
    for z, item in enumerate(slices):
        plane = reference.position + (distances[z] - reference_distance) * normal
        differences = _differences(item.frames[0], reference, plane, normal, tolerance)
        if differences:
            resampled[z] = (plane, differences)
    rescale = bool(resampled) or any(frame.slope != 1 or frame.intercept != 0 for item in slices
                                     for frame in item.frames)
    planes = []
    for z, item in enumerate(slices):
        images = []
        for frame in item.frames:
            pixels = (frame.pixels * frame.slope + frame.intercept).astype(np.float32) if rescale else frame.pixels
            images.append(_resample(pixels, frame, reference, resampled[z][0]) if z in resampled else pixels)
        planes.append(np.stack(images))
    array = np.stack(planes, axis=1)
    notes = [f"slice {z + 1} ({frame_names(slices[z].frames, 1)}) lies on another in-plane grid ({', '.join(what)}) "
             f"and was resampled (linear) onto the grid of {reference.label}; voxels outside its field of view are 0"
             for z, (_, what) in resampled.items()]
    return array, notes


def _differences(frame: Frame, reference: Frame, plane: np.ndarray, normal: np.ndarray, tolerance: float
                 ) -> list[str]:
    """How a slice's in-plane grid differs from the reference grid placed at the slice's plane."""
    found = []
    if frame.pixels.shape != reference.pixels.shape:
        found.append(f"matrix {frame.pixels.shape} vs {reference.pixels.shape}")
    if not np.allclose(frame.pixel_spacing, reference.pixel_spacing, atol=1e-4):
        found.append(f"pixel spacing {np.round(frame.pixel_spacing, 4).tolist()} vs "
                     f"{np.round(reference.pixel_spacing, 4).tolist()} mm")
    if not np.allclose(frame.orientation, reference.orientation, atol=1e-4):
        found.append("in-plane direction")
    offset = frame.position - plane
    if np.linalg.norm(offset - (offset @ normal) * normal) > tolerance:
        found.append("in-plane position")
    return found


def _resample(pixels: np.ndarray, frame: Frame, reference: Frame, plane: np.ndarray) -> np.ndarray:
    """A frame's float32 pixels resampled (linear, 0 outside) onto the reference in-plane grid at `plane` (the
    position of its first pixel). Both grids are one-slice 3D images in the same plane, so only the in-plane
    mapping matters."""
    source = sitk.GetImageFromArray(pixels.astype(np.float32)[None])
    source.SetSpacing((float(frame.pixel_spacing[1]), float(frame.pixel_spacing[0]), 1.0))
    source.SetOrigin(frame.position.tolist())
    source.SetDirection(np.column_stack([frame.orientation[:3], frame.orientation[3:],
                                         _normal(frame)]).ravel().tolist())
    rows, columns = reference.pixels.shape
    target = sitk.Image(columns, rows, 1, sitk.sitkFloat32)
    target.SetSpacing((float(reference.pixel_spacing[1]), float(reference.pixel_spacing[0]), 1.0))
    target.SetOrigin(plane.tolist())
    target.SetDirection(np.column_stack([reference.orientation[:3], reference.orientation[3:],
                                         _normal(reference)]).ravel().tolist())
    result = sitk.Resample(source, target, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(result)[0]


# ---- 4D NIfTI / NRRD files ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class _FileTiming:
    """What a 4D file's header says about its frames."""

    times_ms: list[float] | None = None  # one time per frame
    times_source: str | None = None
    interval_ms: float | None = None  # a regular frame interval, with the first frame's time
    offset_ms: float = 0.0
    interval_source: str | None = None
    one_frame: bool = False  # a 3D-read file that is a 4D file of one frame
    notes: list[str] = dataclasses.field(default_factory=list)


def _read_file(path: Path, frame_interval_ms: float | None) -> Volume:
    """A cine from a 4D NIfTI / NRRD file (see read_cine)."""
    volume = read_itk_file(path, components_as_time=True)
    timing = _nifti_timing(path) if itk_suffix(path) in (".nii", ".nii.gz") else _itk_timing(path)
    if volume.array.ndim == 3:
        if not timing.one_frame:
            raise InputError(f"{path}: a 3D image, not a cine (shape {volume.array.shape}, z, y, x); a cine file is 4D "
                             "with time last on disk (x, y, z, t)")
        volume = Volume(volume.array[None], volume.spacing, volume.origin, volume.direction, volume.metadata)
    count = volume.array.shape[0]
    sidecar = sidecar_path(path)
    record = _read_sidecar(sidecar) if sidecar.is_file() else {}
    notes = list(timing.notes)
    listed = record.get("trigger_times_ms")
    if timing.times_ms is not None:
        times, source = timing.times_ms, timing.times_source
    elif listed is not None:
        times, source = listed, f"the sidecar {sidecar.name}"
        interval = regular_interval(listed)  # the header's interval is the mean of steps equal up to rounding
        if timing.interval_ms is not None and count > 1 and (
                interval is None or abs(interval - timing.interval_ms) > frame_step_tolerance(interval)):
            notes.append(f"{timing.interval_source} states a frame interval of {timing.interval_ms:g} ms; the "
                         f"sidecar's trigger times (steps {np.round(np.diff(listed), 3).tolist()} ms) were used")
    elif timing.interval_ms is not None:
        times = (timing.offset_ms + timing.interval_ms * np.arange(count)).tolist()
        source = timing.interval_source
    elif record.get("frame_interval_ms") is not None:
        times, source = (record["frame_interval_ms"] * np.arange(count)).tolist(), f"the sidecar {sidecar.name}"
    elif frame_interval_ms is not None:
        times, source = (frame_interval_ms * np.arange(count)).tolist(), "the frame interval given"
    else:
        raise InputError(f"{path}: the file states no frame timing (NIfTI pixdim[4] with a time unit in xyzt_units, an "
                         f"NRRD time axis, or a sidecar {sidecar.name} with \"trigger_times_ms\" or "
                         "\"frame_interval_ms\"); give the time between frames in ms (--frame-interval-ms; "
                         "frame_interval_ms in Python)")
    if frame_interval_ms is not None and source != "the frame interval given":
        notes.append(f"the frame interval given ({frame_interval_ms:g} ms) was not used: {source} times the frames")
    if len(times) != count:
        raise InputError(f"{path}: {source} gives {len(times)} trigger time(s) for the file's {count} frame(s)")
    metadata = {**volume.metadata, "trigger_times_ms": [float(time) for time in times], "time_source": source,
                "notes": notes, "skipped": []}
    for key in ("rr_interval_ms", "trigger_times_by_slice_ms", "field_strength_t"):
        if record.get(key) is not None:
            metadata[key] = record[key]
    return Volume(volume.array, volume.spacing, volume.origin, volume.direction, metadata)


def _read_sidecar(path: Path) -> dict[str, Any]:
    """The cine keys of a JSON sidecar, checked: "trigger_times_ms" (numbers), "frame_interval_ms" and
    "rr_interval_ms" (positive numbers), "trigger_times_by_slice_ms" (lists of numbers), and the field strength in
    tesla as "field_strength_t" (ours) or "MagneticFieldStrength" (BIDS) -> "field_strength_t"."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable JSON sidecar ({err})") from err
    if not isinstance(record, dict):
        raise InputError(f"{path}: a sidecar must hold a JSON object; got {type(record).__name__}")
    checked: dict[str, Any] = {}
    for key in ("frame_interval_ms", "rr_interval_ms"):
        value = record.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (np.isfinite(value) and value > 0):
                raise InputError(f"{path}: \"{key}\" must be a positive number of ms; got {value!r}")
            checked[key] = float(value)
    for key in ("trigger_times_ms", "trigger_times_by_slice_ms"):
        value = record.get(key)
        if value is not None:
            try:
                checked[key] = np.asarray(value, dtype=float).tolist()
            except (TypeError, ValueError) as err:
                raise InputError(f"{path}: \"{key}\" must hold numbers (ms); got {value!r}") from err
    for key in ("field_strength_t", "MagneticFieldStrength"):  # ours, and a BIDS sidecar's (dcm2niix)
        value = record.get(key)
        if value is not None and "field_strength_t" not in checked:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.1 <= value <= 12.0:
                raise InputError(f"{path}: \"{key}\" must be a field strength in tesla; got {value!r}")
            checked["field_strength_t"] = float(value)
    return checked


def _nifti_timing(path: Path) -> _FileTiming:
    """Frame timing from a NIfTI-1 header: pixdim[4] and toffset in the time unit of xyzt_units (seconds, ms or us);
    a file whose dim[0] is 4 or more with one time point is a one-frame cine."""
    header = nib.load(path).header
    dims = header["dim"]
    timing = _FileTiming(one_frame=int(dims[0]) >= 4 and int(dims[4]) == 1)
    unit = header.get_xyzt_units()[1]
    step = float(header["pixdim"][4])
    factor = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}.get(unit)
    if factor is not None and np.isfinite(step) and step > 0:
        timing.interval_ms, timing.offset_ms = step * factor, float(header["toffset"]) * factor
        timing.interval_source = f"the NIfTI header (pixdim[4] {step:g} {unit})"
    return timing


def _itk_timing(path: Path) -> _FileTiming:
    """Frame timing from an NRRD / MetaImage header: this library's "trigger_times_ms" field; a Slicer sequence's
    "axis N index values" in a time unit; or a 4th axis of an "...-time" NRRD space with its unit."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    fields = {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}
    timing = _FileTiming()
    if "trigger_times_ms" in fields:
        timing.times_ms = times_to_ms(fields["trigger_times_ms"].split(), "ms", f"{path}: trigger_times_ms")
        timing.times_source = f"the header of {path.name} (trigger_times_ms)"
        timing.one_frame = reader.GetDimension() == 3
        return timing
    index = next((key for key in fields if key.startswith("axis ") and key.endswith(" index values")), None)
    if index is not None:
        values = fields[index].split()
        unit = fields.get("NRRD_units[pixel]") or fields.get(f"NRRD_units[{index.split()[1]}]") or ""
        timing.one_frame = len(values) == 1 and reader.GetNumberOfComponents() == 1
        times = times_to_ms(values, unit, f"{path}: {index}")
        if times is None:
            label = fields.get("NRRD_labels[pixel]") or "index"
            timing.notes.append(f"{path.name} is a Slicer sequence indexed by '{label}' in '{unit or 'no unit'}', not "
                                "by time: its index values are not trigger times")
        else:
            timing.times_ms, timing.times_source = times, f"the sequence index values of {path.name} ({unit})"
        return timing
    if reader.GetDimension() == 4 and fields.get("NRRD_space", "").endswith("-time"):
        units = _nrrd_space_units(path)
        unit = units[3] if len(units) == 4 else ""
        step = reader.GetSpacing()[3]
        converted = times_to_ms([step, reader.GetOrigin()[3]], unit, str(path))
        if converted is None:
            timing.notes.append(f"{path.name}: the time axis has no time unit (space units), so its spacing {step:g} "
                                "is not used as the frame interval")
        else:
            timing.interval_ms, timing.offset_ms = converted
            timing.interval_source = f"the NRRD time axis of {path.name} ({step:g} {unit})"
    return timing


def _nrrd_space_units(path: Path) -> list[str]:
    """The quoted values of an NRRD header's "space units" field (SimpleITK does not report it); [] when absent."""
    with open(path, "rb") as stream:
        header = stream.read(65536).split(b"\n\n")[0].decode("latin-1")
    for line in header.splitlines():
        if line.lower().startswith("space units:"):
            return line.split(":", 1)[1].split('"')[1::2]
    return []

"""T1-mapping source series (MOLLI, ShMOLLI, Look-Locker): images with their inversion times, ready to fit.

From a folder of DICOM files (sub-folders included) the one series of magnitude source images is picked out;
other objects (see dicom_files), scanner maps (T1 map, fit parameters), phase / real / imaginary images and
single-image-per-slice series in the same folder are recognised, listed and never fitted.

Inversion time of each image, from the first source that holds a plausible value (finite, above 0, below 10 s):
InversionTimes (0018,9079), InversionTime (0018,0082), the Philips private element (2005,1572); else TriggerTime,
when it differs between the images of each slice and spans at least LOOK_LOCKER_MIN_SPAN_MS (Look-Locker; a few
ms of jitter in a trigger delay is no inversion time); else the times the user gives.

Acquisition order of each slice's images (ShMOLLI is recognised from it), from the first source whose values are
present and distinct within every slice: (1) the acquisition clock, FrameAcquisitionDateTime (enhanced MR frame
content) / AcquisitionDateTime / AcquisitionDate + AcquisitionTime; (2) AcquisitionTime alone; (3) InstanceNumber;
(4) the frame order inside one multi-frame file. Where a slice's inversion times show the ShMOLLI pattern (see
`shmolli_pattern`) and that order is missing or is no ShMOLLI acquisition (an InstanceNumber renumbered by TI, say),
ShMOLLI's acquisition order is used, with a note; an order from the acquisition clock always stands. Otherwise, with no source the order is unknown: the series says so
and the images are fitted as MOLLI. A 4D NIfTI / NRRD file (time, z, y, x) is read with the times the user gives, in the file's
order, which is taken as the acquisition order.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.t1fit import MIN_INVERSION_TIMES, SHMOLLI, detect_scheme
from ..errors import InputError
from ..volume import Volume
from .dicom import (
    PLAUSIBLE_TI_MS,
    Frame,
    assemble_frames,
    frame_names,
    group_by_position,
    is_dicom_file,
    read_image_frames,
    tag_name,
)
from .itk_files import itk_suffix, read_itk_file

TI_AGREEMENT_MS = 0.5  # user-given times must match the files' within this
LOOK_LOCKER_MIN_SPAN_MS = 300.0  # TriggerTimes of one slice spanning less are a trigger delay, not inversion times
_MAP_WORDS = ("MAP", "FITPARAMS")  # in ImageType values or the series description: a scanner-computed map
# Sources of the acquisition order, in precedence (see the module docstring): name, value of a frame.
CLOCK_SOURCES = ("acquisition date and time", tag_name("AcquisitionTime"))  # the scanner's clock
ORDER_SOURCES: tuple[tuple[str, Any], ...] = (
    (CLOCK_SOURCES[0], lambda frame: frame.acquisition_datetime),
    (CLOCK_SOURCES[1], lambda frame: frame.acquisition_time_of_day),
    (tag_name("InstanceNumber"), lambda frame: frame.instance_number),
    ("frame order in the multi-frame file", lambda frame: None if frame.frame_number is None
     else (frame.file, frame.frame_number)),
)


@dataclasses.dataclass
class T1Series:
    """Source images of a T1 map and their inversion times.

    images: (n, z, y, x) float32, rescaled stored values; the n images of each slice sorted by inversion time.
    inversion_times_ms: (n, z) the inversion time of each image.
    acquisition_rank: (n, z) int, the order in which each slice's images were acquired (0 first); equal to the TI
    order when that is unknown. ShMOLLI is recognised from it.
    time_source: where the inversion times came from (a tag name, or "given by the user").
    order_source: where the acquisition order came from (see ORDER_SOURCES); None when nothing orders the images.
    skipped: one line per group of files in the input that were recognised and left out, with the reason.
    notes: what the reader passed over or assumed (implausible time elements, uneven slice spacing, unknown order).
    """

    images: Volume
    inversion_times_ms: np.ndarray
    acquisition_rank: np.ndarray
    time_source: str
    order_source: str | None = None
    skipped: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def slices(self) -> int:
        return self.images.array.shape[1]

    def reference(self) -> Volume:
        """A 3D (z, y, x) Volume on the source geometry (for maps), holding the first image of each slice."""
        return Volume(self.images.array[0], self.images.spacing, self.images.origin, self.images.direction,
                      {key: value for key, value in self.images.metadata.items()
                       if key in ("modality", "series_description", "series_instance_uid", "frame_of_reference_uid",
                                  "slice_thickness_mm", "source_files")})


def parse_inversion_times(text: str | Sequence[float] | None) -> list[float] | list[list[float]] | None:
    """Inversion times given by the user: "100,180,260", a list of numbers, or a JSON sidecar file holding
    {"inversion_times_ms": [...]} (one list for every slice, or one list per slice). Returns None for None."""
    if text is None:
        return None
    if not isinstance(text, str):
        return _checked_times([float(value) for value in text], "the inversion times given")
    if text.strip().lower().endswith(".json"):
        path = Path(text)
        try:
            values = json.loads(path.read_text())["inversion_times_ms"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"{path}: not a JSON sidecar with an \"inversion_times_ms\" list ({err})") from err
        if isinstance(values, list) and values and all(isinstance(value, list) for value in values):
            return [_checked_times(row, f"{path}: inversion_times_ms[{index}]") for index, row in enumerate(values)]
        return _checked_times(values, f"{path}: inversion_times_ms")
    try:
        values = [float(value) for value in text.replace(";", ",").split(",") if value.strip()]
    except ValueError as err:
        raise InputError(f"inversion times must be numbers in ms separated by commas, e.g. 100,180,260; got "
                         f"{text!r}") from err
    return _checked_times(values, "the inversion times given")


def _checked_times(values: Sequence, what: str) -> list[float]:
    try:
        times = [float(value) for value in values]
    except (TypeError, ValueError) as err:
        raise InputError(f"{what} must be numbers in ms; got {values!r}") from err
    if not all(np.isfinite(time) and time > 0 for time in times):
        raise InputError(f"{what} must be positive numbers of ms; got {times}")
    return times


def read_t1_series(path: str | Path | Sequence[str | Path],
                   inversion_times_ms: list[float] | list[list[float]] | None = None) -> T1Series:
    """Read a T1-mapping series: a DICOM folder (searched recursively), DICOM files, or a 4D NIfTI / NRRD file.

    inversion_times_ms: times the user gives, in acquisition order (one list for every slice, or one per slice);
    used when the files hold none, and checked against the files' times when they do.
    Raises InputError naming the files and the reason: no T1-mapping series, several, fewer than 3 inversion
    times, no inversion times anywhere, mixed geometry, unreadable files.
    """
    if isinstance(path, (str, Path)) and Path(path).is_file() and itk_suffix(path):
        return _from_4d_file(Path(path), inversion_times_ms)
    if isinstance(path, (str, Path)) and Path(path).is_file() and not is_dicom_file(path):
        raise InputError(f"{path}: not a T1-mapping input (expected a DICOM folder or files, or a 4D NIfTI / NRRD "
                         "file with its inversion times)")
    frames, skipped = read_image_frames(path, recursive=True)
    series, more = _pick_series(frames, path)
    groups, order_source = _acquisition_order(series)
    groups, source = _with_inversion_times(groups, inversion_times_ms)
    images = assemble_frames([frame for group in groups for frame in group], uneven_slices=True)
    if images.array.ndim != 4 or images.array.shape[0] < MIN_INVERSION_TIMES:
        count = 1 if images.array.ndim == 3 else images.array.shape[0]
        raise InputError(f"only {count} inversion time(s) per slice in {frame_names(groups[0])}; a T1 fit needs at "
                         f"least {MIN_INVERSION_TIMES}")
    images.require_finite("the T1-mapping images")
    times = np.asarray(images.metadata["inversion_times_ms"], dtype=float)
    # groups are in acquisition order and in the volume's slice order; the volume's images are in TI order
    rank = np.stack([np.argsort([frame.inversion_time for frame in group], kind="stable") for group in groups], 1)
    rank, order_source, notes = shmolli_order(times, rank, order_source)
    if order_source is None:
        notes.append("the acquisition order of the images is unknown (no acquisition time, instance number or "
                     "multi-frame order tells it); ShMOLLI cannot be recognised, the images are fitted as MOLLI")
    images = dataclasses.replace(images, array=images.array.astype(np.float32, copy=False))
    return T1Series(images, times, rank, source, order_source, skipped + more,
                    list(images.metadata.get("notes") or []) + notes)


def shmolli_pattern(times_ms: np.ndarray) -> np.ndarray | None:
    """The ShMOLLI acquisition rank of 7 inversion times sorted ascending, recognised from the times alone, or None.

    ShMOLLI (Piechnik et al., JCMR 2010) samples 5 images one RR apart after a first inversion (TI0 + k RR), then one
    image after each of two more inversions, a little later in the recovery (TI0 + ~80 ms, TI0 + ~160 ms): sorted,
    the first two gaps are short and the last four about an RR. Returns rank[i] = acquisition position of the i-th
    shortest TI ([0, 5, 6, 1, 2, 3, 4]) when the two short gaps are both under half the shortest long gap. No MOLLI
    scheme has 7 samples with that pattern.
    """
    times = np.asarray(times_ms, dtype=float)
    if times.size != 7:
        return None
    gaps = np.diff(times)
    if not (gaps[:2].max() < 0.5 * gaps[2:].min() and gaps.min() > 0):
        return None
    return np.array([0, 5, 6, 1, 2, 3, 4])


def shmolli_order(times: np.ndarray, rank: np.ndarray, order_source: str | None
                  ) -> tuple[np.ndarray, str | None, list[str]]:
    """Where a slice's inversion times (n, z; ascending per slice) show the ShMOLLI pattern but the order its images
    came with is not a ShMOLLI acquisition (unknown, or e.g. an InstanceNumber renumbered by inversion time), the
    ShMOLLI acquisition rank replaces it, with a note. An order from the acquisition clock (CLOCK_SOURCES) is never
    replaced. Returns the rank (n, z), its source and the notes."""
    rank, notes, replaced = rank.copy(), [], []
    if order_source in CLOCK_SOURCES:  # the scanner's clock says when each image was acquired: it stands
        return rank, order_source, notes
    for z in range(times.shape[1]):
        pattern = shmolli_pattern(times[:, z])
        given = times[np.argsort(rank[:, z]), z]
        if pattern is not None and (order_source is None or detect_scheme(given)[0] != SHMOLLI):
            rank[:, z] = pattern
            replaced.append(z)
    if not replaced:
        return rank, order_source, notes
    slices = ", ".join(str(z + 1) for z in replaced)
    if order_source is None:
        notes.append(f"the acquisition order was inferred from the inversion times of slice(s) {slices}: they show the "
                     "ShMOLLI pattern (5 samples one RR apart, 2 shortly after the first)")
        return rank, "inferred from the inversion times (ShMOLLI pattern)", notes
    notes.append(f"{order_source} orders the images of slice(s) {slices} as no ShMOLLI acquisition does (e.g. by "
                 "inversion time), but their inversion times show the ShMOLLI pattern: fitted in ShMOLLI's "
                 "acquisition order")
    return rank, order_source, notes


def _acquisition_order(frames: list[Frame]) -> tuple[list[list[Frame]], str | None]:
    """Each slice position's frames in acquisition order, from the first of ORDER_SOURCES whose values are present
    and distinct within every position, and that source's name; when none is: None, and each position in TI order
    (in file order where the files hold no TI, for times the user gives)."""
    groups = group_by_position(frames)
    for name, value in ORDER_SOURCES:
        keys = [[value(frame) for frame in group] for group in groups]
        if all(None not in row and len(set(row)) == len(row) for row in keys):
            return [[frame for _, frame in sorted(zip(row, group), key=lambda pair: pair[0])]
                    for row, group in zip(keys, groups)], name
    if all(frame.inversion_time is not None for frame in frames):
        return [sorted(group, key=lambda frame: frame.inversion_time) for group in groups], None
    return groups, None  # file order


def _from_4d_file(path: Path, given: list[float] | list[list[float]] | None) -> T1Series:
    """A (t, z, y, x) file; the user's times are in the file's order along t."""
    volume = read_itk_file(path, components_as_time=True)  # a Slicer sequence NRRD holds the times as components
    if volume.array.ndim != 4:
        raise InputError(f"{path}: is a 3D image; a T1-mapping input file must be 4D (inversion time, z, y, x)")
    volume.require_finite("the T1-mapping images")
    count, slices = volume.array.shape[:2]
    if given is None:
        raise InputError(f"{path}: a NIfTI / NRRD file holds no inversion times; give them with --ti "
                         "(comma-separated ms, or a JSON sidecar)")
    times = _times_per_slice(given, count, slices, str(path))
    if count < MIN_INVERSION_TIMES:
        raise InputError(f"{path}: only {count} inversion time(s); a T1 fit needs at least {MIN_INVERSION_TIMES}")
    order = np.argsort(times, axis=0, kind="stable")
    images = np.take_along_axis(volume.array.astype(np.float32), order[:, :, None, None], axis=0)
    sorted_times = np.take_along_axis(times, order, axis=0)
    rank, order_source, notes = shmolli_order(sorted_times, order, "the file's time axis (taken as the acquisition "
                                              "order)")
    return T1Series(volume.with_array(images), sorted_times, rank, "given by the user", order_source, notes=notes)


def _times_per_slice(given: list[float] | list[list[float]], count: int, slices: int, where: str) -> np.ndarray:
    """(count, slices) array of the user's times, which are one list for all slices or one list per slice."""
    rows = given if given and isinstance(given[0], list) else [given] * slices
    if len(rows) != slices or any(len(row) != count for row in rows):
        shape = [len(row) for row in rows] if given and isinstance(given[0], list) else len(given)
        raise InputError(f"{where}: {count} images per slice over {slices} slice(s), but the inversion times given "
                         f"have {shape} values; give one time per image (in acquisition order) with --ti")
    return np.asarray(rows, dtype=float).T


def _skip_reason(frame: Frame) -> str | None:
    """Why an image is never fitted (a scanner-computed map; a phase, real or imaginary image), or None for a
    magnitude source image."""
    description = (frame.header.get("series_description") or "").upper()
    if any(word in value for value in frame.image_type for word in _MAP_WORDS) or any(
            word in description for word in _MAP_WORDS):
        return "scanner map"
    if frame.component not in (None, "magnitude"):
        return f"{frame.component} image"
    return None


def _pick_series(frames: list[Frame], where: object) -> tuple[list[Frame], list[str]]:
    """The frames of the one T1-mapping source series among `frames`, and what was left out (and why)."""
    lacking = [frame for frame in frames if not frame.header.get("series_instance_uid")]
    if lacking and len(lacking) < len(frames):
        raise InputError(f"{frame_names(lacking)}: {tag_name('SeriesInstanceUID')} is missing while the other images "
                         "have one, so the series they belong to is unknown; restore it or leave these files out")
    groups: dict[tuple[str, str], list[Frame]] = defaultdict(list)
    for frame in frames:
        groups[(frame.header.get("series_instance_uid") or "", _skip_reason(frame) or "")].append(frame)
    skipped, candidates, single_image_descriptions = [], [], []
    for (_, reason), members in groups.items():
        description = members[0].header.get("series_description") or "no description"
        if not reason and len(members) == len(group_by_position(members)):
            reason = "one image per slice position"
            single_image_descriptions.append(description)
        if reason:
            skipped.append(f"{len(members)} image(s) of series '{description}' ({reason}): {frame_names(members)}")
        else:
            candidates.append(members)
    if not candidates:
        found = "; ".join(skipped) or "nothing"
        shared = len(single_image_descriptions) > len(set(single_image_descriptions))
        hint = ("; several one-image-per-slice series share one description, as when an anonymiser gives every "
                f"file its own {tag_name('SeriesInstanceUID')}: restore one UID for the series") if shared else ""
        raise InputError(f"{where}: no T1-mapping series (MOLLI / ShMOLLI / Look-Locker source images: several "
                         f"images per slice position) was found; found {found}{hint}")
    if len(candidates) > 1:
        names = "; ".join(f"'{members[0].header.get('series_description') or 'no description'}' "
                          f"({len(members)} images: {frame_names(members, 1)})" for members in candidates)
        raise InputError(f"{where}: holds {len(candidates)} T1-mapping series ({names}); give the folder or the "
                         "files of one series")
    return candidates[0], skipped


def _with_inversion_times(groups: list[list[Frame]], given: list[float] | list[list[float]] | None
                          ) -> tuple[list[list[Frame]], str]:
    """Each slice's frames (in acquisition order) with `inversion_time` set from the files, TriggerTime (Look-Locker)
    or the user, and where the times came from."""
    frames = [frame for group in groups for frame in group]
    has_time = [frame.inversion_time is not None for frame in frames]
    if any(has_time) and not all(has_time):
        lacking = [frame for frame in frames if frame.inversion_time is None]
        raise InputError(f"{len(lacking)} of {len(frames)} images have no plausible inversion time "
                         f"({tag_name('InversionTimes')}, {tag_name('InversionTime')} or Philips (2005,1572)): "
                         f"{frame_names(lacking)}; if they are not source images of this series (maps, other "
                         "images), leave them out of the folder")
    if all(has_time):
        sources = Counter(frame.inversion_source for frame in frames)
        source = next(iter(sources)) if len(sources) == 1 else ", ".join(
            f"{name} ({count} images)" for name, count in sources.items())
    elif _look_locker(groups):
        groups = [[dataclasses.replace(frame, inversion_time=frame.trigger_time) for frame in group]
                  for group in groups]
        source = f"{tag_name('TriggerTime')} (Look-Locker)"
    elif given is not None:
        times = _times_per_slice(given, len(groups[0]), len(groups), frame_names(frames))
        return [[dataclasses.replace(frame, inversion_time=float(times[index, z])) for index, frame in enumerate(group)]
                for z, group in enumerate(groups)], "given by the user"
    else:
        raise InputError(f"no inversion times in {frame_names(frames)}: the images lack {tag_name('InversionTimes')}, "
                         f"{tag_name('InversionTime')} and the Philips private (2005,1572) (or hold no plausible "
                         f"value), and {_trigger_summary(groups)}; give the times with --ti (comma-separated ms in "
                         "acquisition order, or a JSON sidecar)")
    if given is not None:
        _check_agreement(groups, given)
    return groups, source


def _look_locker(groups: list[list[Frame]]) -> bool:
    """Whether TriggerTime can stand for the inversion time: present, plausible and distinct within every slice, and
    spanning at least LOOK_LOCKER_MIN_SPAN_MS (a Look-Locker readout samples the recovery over hundreds of ms)."""
    low, high = PLAUSIBLE_TI_MS
    for group in groups:
        times = [frame.trigger_time for frame in group]
        if None in times or len(set(times)) < len(times) or not all(low < time < high for time in times):
            return False
        if max(times) - min(times) < LOOK_LOCKER_MIN_SPAN_MS:
            return False
    return True


def _trigger_summary(groups: list[list[Frame]]) -> str:
    """What TriggerTime holds, for the message when it cannot stand for the inversion times."""
    times = [frame.trigger_time for group in groups for frame in group]
    name = tag_name("TriggerTime")
    if any(time is None for time in times):
        return f"{name} is missing"
    if len(set(times)) == 1:
        return f"{name} is {times[0]:g} ms in every image"
    return (f"{name} spans only {min(times):g}-{max(times):g} ms (less than {LOOK_LOCKER_MIN_SPAN_MS:g} ms within a "
            "slice, or repeated): a trigger delay, not inversion times")


def _check_agreement(groups: list[list[Frame]], given: list[float] | list[list[float]]) -> None:
    """The user's times must match the files' (acquisition order) when both exist."""
    times = _times_per_slice(given, len(groups[0]), len(groups), frame_names(groups[0]))
    for z, group in enumerate(groups):
        found = np.array([frame.inversion_time for frame in group], dtype=float)
        if np.max(np.abs(found - times[:, z])) > TI_AGREEMENT_MS:
            raise InputError(f"the inversion times given ({times[:, z].tolist()}) differ from those in the files of "
                             f"slice {z} ({found.tolist()}: {frame_names(group, 1)}); leave --ti out to use the "
                             "files' times")

"""Finding the DICOM image objects in what a user points at, as scanners, PACS and anonymisers write them.

A folder exported from a scanner or a PACS holds more than one series of images: structured reports, presentation
states, key-object selections, a DICOMDIR, screen captures, raw data, and files that are not DICOM at all. Files
are recognised by their content, never by their name:
- DICOM Part 10 files (128-byte preamble + "DICM"), and raw data sets without preamble or file meta information
  (implicit or explicit VR little endian, as some Siemens and GE exports write them), read with pydicom's
  `force=True` after a check that the first bytes are a plausible DICOM element;
- among DICOM objects, only grey-level images are kept: objects of a non-image SOP class (reports, presentation
  states, key objects, media directories, raw data, waveforms, documents) and colour images (RGB / YBR / palette,
  e.g. screen captures) are skipped and listed; so is anything else that is not DICOM (counted).

A file that is DICOM but cannot be fully read (truncated, undecodable pixel data) is an error, never skipped: a
silently shrunken series would be fitted or enhanced as if it were whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import struct
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import InputError

_PREAMBLE = 128
_SNIFF_GROUPS = (0x0002, 0x0008)  # a raw data set starts with file meta (0002) or identifying (0008) elements
_VALID_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD",
              b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
              b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}
_COLOUR = ("RGB", "YBR", "PALETTE")  # PhotometricInterpretation of a colour image
_EXAMPLES = 3  # file names quoted per skipped group
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # the Secondary Capture SOP classes start with this UID


@dataclasses.dataclass
class Scan:
    """What was found: the grey-level image data sets to read, and one line per group of files left out."""

    images: list[tuple[Path, pydicom.Dataset]]
    skipped: list[str]


def is_dicom_file(path: str | Path) -> bool:
    """True for a DICOM Part 10 file (b'DICM' after the 128-byte preamble) or a raw data set whose first bytes are
    a plausible little-endian DICOM element of group 0002 or 0008. The file name plays no part."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(_PREAMBLE + 4)
    except OSError:
        return False
    if head[_PREAMBLE:] == b"DICM" or _damaged_marker(path, head):
        return True
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    if group not in _SNIFF_GROUPS or element > 0x0FFF:
        return False
    if head[4:6] in _VALID_VRS:  # explicit VR
        return True
    length = struct.unpack("<I", head[4:8])[0]  # implicit VR: a short value length
    return length < 1024


def _damaged_marker(path: str | Path, head: bytes) -> bool:
    """A Part 10 file whose "DICM" marker is damaged: a file meta element (group 0002, explicit VR) follows the
    preamble all the same. Such a file is DICOM and must be read or refused, never skipped as non-DICOM."""
    if len(head) < _PREAMBLE + 4:
        return False
    try:
        with open(path, "rb") as stream:
            stream.seek(_PREAMBLE + 4)
            element = stream.read(6)
    except OSError:
        return False
    return len(element) == 6 and struct.unpack("<H", element[:2])[0] == 0x0002 and element[4:6] in _VALID_VRS


@contextlib.contextmanager
def library_messages() -> Iterator[list[str]]:
    """Collect what pydicom and its decoders say (Python warnings and pydicom's log) instead of printing it, so the
    caller can turn what matters into a clear error and the console sees no library noise."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                messages.append(record.getMessage())

    logger = logging.getLogger("pydicom")
    handler, propagate = Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(warning.message) for warning in caught)
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def read_dataset(path: Path) -> pydicom.Dataset:
    """A DICOM file (Part 10 or raw) read with pydicom, library warnings kept off the console.

    A raw data set gets the transfer syntax its encoding shows, so its pixels decode. InputError for a file pydicom
    cannot parse or one that ends before its data do (truncated).
    """
    with open(path, "rb") as stream:
        head = stream.read(_PREAMBLE + 4)
    if head[_PREAMBLE:] != b"DICM" and _damaged_marker(path, head):
        raise InputError(f"{path}: a damaged DICOM file: file meta information follows the 128-byte preamble, but the "
                         f"'DICM' marker reads {head[_PREAMBLE:]!r}")
    with library_messages() as messages:
        try:
            dataset = pydicom.dcmread(path, force=True)
        except Exception as err:  # pydicom signals corrupt input with many exception types
            raise InputError(f"{path}: not a readable DICOM file ({err})") from err
        _convert_every_element(dataset, path)
    ended_early = [message for message in messages if "end of file" in message.lower()]
    if ended_early:
        raise InputError(f"{path}: the file ends before its data do (truncated file): {ended_early[0]}")
    meta = dataset.file_meta
    if "TransferSyntaxUID" not in meta:
        encoding = getattr(dataset, "original_encoding", None)  # pydicom 3; pydicom 2 keeps is_implicit_VR
        implicit = encoding[0] if encoding else getattr(dataset, "is_implicit_VR", True)
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit is not False else ExplicitVRLittleEndian
    return dataset


def _convert_every_element(dataset: pydicom.Dataset, path: Path) -> None:
    """Decode every element now (pydicom defers it to first access), so a corrupt one (unknown VR, a value that
    does not parse) is an InputError naming the file and the tag here, not a stray exception later."""
    tag = None
    try:
        for part in (dataset.file_meta, dataset):
            for element in part.iterall():
                tag = element.tag
    except Exception as err:  # pydicom raises many exception types on corrupt elements
        where = f"after element {tag}" if tag is not None else "in its first element"
        raise InputError(f"{path}: a DICOM element {where} cannot be read ({err})") from err


def check_pixel_data(dataset: pydicom.Dataset, path: Path) -> None:
    """InputError "pixel data truncated" (expected and found bytes) when uncompressed pixel data are shorter than
    Rows x Columns x frames x samples x BitsAllocated call for."""
    if "PixelData" not in dataset:
        return
    syntax = UID(str(dataset.file_meta.TransferSyntaxUID))
    if not syntax.is_transfer_syntax:
        raise InputError(f"{path}: TransferSyntaxUID (0002,0010) {syntax} is not a known transfer syntax, so the pixel "
                         "data cannot be decoded (damaged file meta)")
    if syntax.is_compressed:
        return
    expected = _native_pixel_bytes(dataset)
    found = len(dataset.PixelData)
    if expected is not None and found < expected:
        raise InputError(f"{path}: pixel data truncated: expected {expected} bytes for {_frames(dataset)} frame(s) of "
                         f"{dataset.get('Rows')} x {dataset.get('Columns')} pixels, found {found}")


def _frames(dataset: pydicom.Dataset) -> int:
    try:
        return max(1, int(dataset.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _native_pixel_bytes(dataset: pydicom.Dataset) -> int | None:
    """Bytes of uncompressed pixel data the image attributes call for, None when they are missing."""
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        bits, samples = int(dataset.BitsAllocated), int(dataset.get("SamplesPerPixel") or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return (rows * columns * _frames(dataset) * samples * bits + 7) // 8


def skip_reason(dataset: pydicom.Dataset, path: Path) -> str | None:
    """Why a DICOM object is not a grey-level image to read, or None when it is one.

    By SOP class (a media storage directory; a non-image class such as a report, presentation state or key object
    selection, without pixel data) and by content (colour pixels). An object of an image SOP class, or of no SOP
    class, or a garbled one, without pixel data is not skipped: reading it raises the error that names the missing
    element. InputError when the data set's SOP class contradicts its file meta (a damaged file).
    """
    stated = str(dataset.get("SOPClassUID") or "").strip()
    in_meta = str(dataset.file_meta.get("MediaStorageSOPClassUID") or "").strip()
    if stated and in_meta and stated != in_meta:
        raise InputError(f"{path}: a damaged DICOM file: its SOPClassUID (0008,0016) {stated!r} contradicts the file "
                         f"meta's MediaStorageSOPClassUID (0002,0002) {in_meta!r}")
    sop_class = UID(stated or in_meta)
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in dataset:
        return "media directory (DICOMDIR)"
    if "PixelData" not in dataset and "Image" not in sop_class.name:
        if not sop_class or not sop_class.is_valid:  # no object of any kind, or a garbled UID: a damaged file
            return None
        return f"{sop_class.name}: not an image"
    photometric = str(dataset.get("PhotometricInterpretation") or "").upper()
    if int(dataset.get("SamplesPerPixel") or 1) != 1 or photometric.startswith(_COLOUR):
        return f"{sop_class.name or 'no SOP class'}: colour image ({photometric or 'SamplesPerPixel ' + str(dataset.get('SamplesPerPixel'))})"
    return None


def is_secondary_capture(dataset: pydicom.Dataset) -> bool:
    """True for the Secondary Capture image SOP classes (screen captures and other images not acquired as such)."""
    return str(dataset.get("SOPClassUID") or "").startswith(SECONDARY_CAPTURE)


def has_orientation(dataset: pydicom.Dataset) -> bool:
    """Whether an image says how it lies in the patient: ImageOrientationPatient at the top level or in the plane
    orientation functional group (shared or of the first frame). Screenshots and other derived images often lack it:
    beside placed images, such an image is left out when it is SECONDARY or of another series; a member of a placed
    series that lacks it (a damaged file) is not, and reading it names the missing element."""
    if "ImageOrientationPatient" in dataset:
        return True
    for groups in (dataset.get("SharedFunctionalGroupsSequence"), dataset.get("PerFrameFunctionalGroupsSequence")):
        plane = groups[0].get("PlaneOrientationSequence") if groups else None
        if plane and "ImageOrientationPatient" in plane[0]:
            return True
    return False


def find_images(paths_or_dir: str | Path | Iterable[str | Path], *, recursive: bool = False) -> Scan:
    """The grey-level DICOM images among the files of a folder (sub-folders too with `recursive`) or a list of
    files, read with their pixels; everything else listed in `Scan.skipped`.

    Files given one by one must each be a DICOM image (InputError otherwise). InputError when a folder holds no
    image, naming what it does hold; for a DICOM file that cannot be fully read (see read_dataset).
    """
    explicit = not isinstance(paths_or_dir, (str, Path)) or not Path(paths_or_dir).is_dir()
    if isinstance(paths_or_dir, (str, Path)):
        root = Path(paths_or_dir)
        if not root.exists():
            raise InputError(f"{root}: no such file or folder")
        files = [root] if explicit else sorted(p for p in (root.rglob("*") if recursive else root.iterdir())
                                                if p.is_file())
    else:
        files = [Path(p) for p in paths_or_dir]
        if not files:
            raise InputError("no DICOM files were given")
    images: list[tuple[Path, pydicom.Dataset]] = []
    others: dict[str, list[Path]] = {}
    not_dicom: list[Path] = []
    for path in files:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        if not is_dicom_file(path):
            if explicit:
                raise InputError(f"{path}: not a DICOM file (no DICM prefix and no DICOM element at its start)")
            not_dicom.append(path)
            continue
        dataset = read_dataset(path)
        reason = skip_reason(dataset, path)
        if reason is None:
            check_pixel_data(dataset, path)
            images.append((path, dataset))
        elif explicit:
            raise InputError(f"{path}: not an image to read ({reason})")
        else:
            others.setdefault(reason, []).append(path)
    placed_series = {str(dataset.get("SeriesInstanceUID")) for _, dataset in images if has_orientation(dataset)}

    def unplaced_extra(dataset: pydicom.Dataset) -> bool:  # a screenshot, not a series member that lost its tag
        secondary = "SECONDARY" in [str(value).upper() for value in dataset.get("ImageType") or ()]
        other_series = str(dataset.get("SeriesInstanceUID")) not in placed_series
        return "PixelData" in dataset and not has_orientation(dataset) and (secondary or other_series)

    for reason, test in (("secondary capture (screen capture) beside acquired images", is_secondary_capture),
                         ("image without ImageOrientationPatient (a screenshot: cannot be placed) beside placed images",
                          unplaced_extra)):
        left_out = [item for item in images if test(item[1])]
        if left_out and len(left_out) < len(images):
            images = [item for item in images if not test(item[1])]
            others[reason] = [path for path, _ in left_out]
    skipped = [f"{len(paths)} {reason} object(s): {_names(paths)}" for reason, paths in others.items()]
    if not_dicom:
        kinds = Counter(path.suffix.lower() or "no extension" for path in not_dicom)
        skipped.append(f"{len(not_dicom)} non-DICOM file(s) ({', '.join(f'{n} {k}' for k, n in kinds.most_common())})"
                       f": {_names(not_dicom)}")
    if not images:
        found = "; ".join(skipped) or "no files"
        raise InputError(f"{paths_or_dir}: holds no DICOM image; found {found}")
    return Scan(images, skipped)


def _names(paths: list[Path]) -> str:
    more = f" and {len(paths) - _EXAMPLES} more" if len(paths) > _EXAMPLES else ""
    return ", ".join(path.name for path in paths[:_EXAMPLES]) + more

"""One call for a command's image output in the format the user asks for: NIfTI / NRRD / MetaImage files, or a
DICOM series for PACS (`--out FOLDER --format dicom`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import OutputError
from ..volume import Volume
from .cine import write_cine
from .derived_series import write_derived_series
from .itk_files import WRITE_SUFFIXES, itk_suffix
from .writing import same_file, write_volume

__all__ = ["OUTPUT_FORMATS", "write_output"]

# format name -> the file suffixes it writes (a DICOM series is a folder)
OUTPUT_FORMATS = {"dicom": (), "nifti": (".nii", ".nii.gz"), "nrrd": (".nrrd",), "mha": (".mha",)}


def write_output(volume: Volume, out: str | Path, *, method: str, fmt: str | None = None,
                 checkpoint: str | None = None, synthetic: bool = True, description: str | None = None,
                 source: str | Path | Sequence[str | Path] | None = None,
                 protected: Iterable[str | Path] = ()) -> list[Path]:
    """Write a method's output image to `out` in format `fmt` and return the paths written: the one-call writer for
    Python users (the Slicer console, scripts). The command line writes DICOM through `write_derived_series` itself,
    because it numbers the series of one run and shares their study (the series number and study UID that call
    returns).

    fmt: "dicom" (out: a new or empty folder; see derived_series.write_derived_series, which receives method,
    checkpoint, synthetic, description and source), "nifti" (.nii, .nii.gz), "nrrd" (.nrrd), "mha" (.mha), or None
    for the format the file suffix names. A file output of a cine (4D with metadata "trigger_times_ms") is written
    with its timing sidecar (cine.write_cine), any other image with write_volume; both atomically. description:
    the DICOM series' description (default: the method's name, with the quantity and units when known).
    protected: the input files, never overwritten (nor used as the DICOM folder).

    Raises OutputError for an unknown format, a suffix that does not match it, a protected path, or an output that
    cannot be written; InputError (from the writers) for an image they cannot store. Nothing is written on error.
    """
    out, protected = Path(out), [Path(path) for path in protected]
    if fmt is None:
        suffix = itk_suffix(out, WRITE_SUFFIXES)
        fmt = next((name for name, suffixes in OUTPUT_FORMATS.items() if suffix in suffixes), None)
        if fmt is None:
            raise OutputError(f"{out}: no image file suffix ({', '.join(WRITE_SUFFIXES)}); for a DICOM series give "
                              "a folder and the format dicom")
    if fmt not in OUTPUT_FORMATS:
        raise OutputError(f"unknown output format {fmt!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    if fmt == "dicom":
        for path in protected:
            if same_file(out, path):
                raise OutputError(f"{out}: is the input {path}; give a new folder for the DICOM series")
        description = description or _default_description(volume, method)
        return write_derived_series(volume, out, method=method, checkpoint=checkpoint, synthetic=synthetic,
                                    description=description, source=source).paths
    if itk_suffix(out, OUTPUT_FORMATS[fmt]) is None:
        raise OutputError(f"{out}: a {fmt} output file name ends in {' or '.join(OUTPUT_FORMATS[fmt])}")
    if volume.array.ndim == 4 and volume.metadata.get("trigger_times_ms") is not None and fmt != "mha":
        return [write_cine(volume, out, protected=protected)]
    return [write_volume(volume, out, protected=protected)]


def _default_description(volume: Volume, method: str) -> str:
    """The method's name with the quantity and units it made, e.g. "t1_from_cine t1 (ms)"."""
    quantity, units = volume.metadata.get("quantity"), volume.metadata.get("units")
    return " ".join(part for part in (method, str(quantity or ""), f"({units})" if units else "") if part)
